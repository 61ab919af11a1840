package main

import (
	"errors"
	"time"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec used for requests
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// The bench receives up to a few hundred thousand frames a second on one
// core. Decoding each into a ConnectResponse (a structpb map per push) would
// make the tool, not the server, the limit, so the Connect stream is read
// with rawCodec and only the fields the bench needs are picked out of the
// wire bytes with protowire. wire_test.go checks this against proto.Marshal.

// rawFrame receives one undecoded ConnectResponse. Its buffer is reused by
// the one reader goroutine that owns it.
type rawFrame struct{ b []byte }

// rawCodec marshals requests with the standard proto codec and copies
// responses into a *rawFrame. Its name is "proto", so the server decodes
// requests with its usual codec (the content type is application/grpc+proto).
type rawCodec struct{}

var protoCodec = encoding.GetCodecV2("proto")

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*rawFrame)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	n := data.Len()
	if cap(r.b) < n {
		r.b = make([]byte, n)
	}
	r.b = r.b[:n]
	data.CopyTo(r.b)
	return nil
}

// frameKind is which ConnectResponse frame arrived.
type frameKind int

const (
	kindUnknown frameKind = iota
	kindIdentified
	kindPong
	kindPush
	kindGoodbye
)

// frameInfo is what the bench reads from one server frame. Fields not set
// by the frame's kind keep stale values; read only those of kind.
type frameInfo struct {
	kind frameKind

	// Identified.
	hbInterval, hbTimeout time.Duration

	// Push.
	seq    uint64
	sentAt int64 // Push.sent_at, unix nanoseconds; 0 if absent
	t      int64 // payload "t": scheduled or actual publish time, unix ns; 0 if absent
	idx    int64 // payload "i": the bench's index of the push; -1 if absent

	// Goodbye.
	goodbye presencev1.GoodbyeReason
}

var errWire = errors.New("malformed frame")

// decodeFrame fills f from the wire bytes of one ConnectResponse.
func decodeFrame(b []byte, f *frameInfo) error {
	f.kind = kindUnknown
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if typ != protowire.BytesType || num < 1 || num > 4 {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return errWire
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		var err error
		switch num {
		case 1:
			f.kind = kindIdentified
			err = decodeIdentified(v, f)
		case 2:
			f.kind = kindPong
		case 3:
			f.kind = kindPush
			err = decodePush(v, f)
		case 4:
			f.kind = kindGoodbye
			err = decodeGoodbye(v, f)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// eachField calls fn for every field of the message in b; for a
// length-delimited field v is its content, otherwise x is its varint or
// fixed value.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func decodeIdentified(b []byte, f *frameInfo) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		var err error
		switch {
		case num == 3 && typ == protowire.BytesType:
			f.hbInterval, err = decodeDuration(v)
		case num == 4 && typ == protowire.BytesType:
			f.hbTimeout, err = decodeDuration(v)
		}
		return err
	})
}

// decodeDuration reads a google.protobuf.Duration (or Timestamp: the same
// two fields) as nanoseconds.
func decodeDuration(b []byte) (time.Duration, error) {
	var secs, nanos int64
	err := eachField(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			secs = int64(x)
		case num == 2 && typ == protowire.VarintType:
			nanos = int64(int32(x))
		}
		return nil
	})
	return time.Duration(secs*1e9 + nanos), err
}

func decodePush(b []byte, f *frameInfo) error {
	f.seq, f.sentAt, f.t, f.idx = 0, 0, 0, -1
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 3 && typ == protowire.VarintType:
			f.seq = x
		case num == 5 && typ == protowire.BytesType:
			d, err := decodeDuration(v)
			f.sentAt = int64(d)
			return err
		case num == 6 && typ == protowire.BytesType:
			return decodePayload(v, f)
		}
		return nil
	})
}

// decodePayload reads the "t" and "i" keys of the push's data, a
// google.protobuf.Value holding a Struct of string values.
func decodePayload(value []byte, f *frameInfo) error {
	return eachField(value, func(num protowire.Number, typ protowire.Type, st []byte, _ uint64) error {
		if num != 5 || typ != protowire.BytesType { // Value.struct_value
			return nil
		}
		return eachField(st, func(num protowire.Number, typ protowire.Type, entry []byte, _ uint64) error {
			if num != 1 || typ != protowire.BytesType { // Struct.fields map entry
				return nil
			}
			var key, str []byte
			err := eachField(entry, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				switch {
				case num == 1 && typ == protowire.BytesType:
					key = v
				case num == 2 && typ == protowire.BytesType:
					str = stringValue(v)
				}
				return nil
			})
			if err != nil || len(key) != 1 || str == nil {
				return err
			}
			switch key[0] {
			case 't':
				f.t = parseInt(str)
			case 'i':
				f.idx = parseInt(str)
			}
			return nil
		})
	})
}

// stringValue returns Value.string_value from a Value's bytes, or nil.
func stringValue(b []byte) []byte {
	var s []byte
	eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == 3 && typ == protowire.BytesType {
			s = v
		}
		return nil
	})
	return s
}

func decodeGoodbye(b []byte, f *frameInfo) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		if num == 1 && typ == protowire.VarintType {
			f.goodbye = presencev1.GoodbyeReason(x)
		}
		return nil
	})
}

// parseInt parses a decimal integer without allocating; -1 if it is not one.
func parseInt(b []byte) int64 {
	if len(b) == 0 || len(b) > 19 {
		return -1
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
