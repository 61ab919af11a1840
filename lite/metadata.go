package lite

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// headerState collects one request header block while it is decoded.
type headerState struct {
	sid       uint32
	endStream bool
	st        *Stream // non-nil: a header block on an open stream (trailers)
	size      uint32  // decoded header list size (RFC 9113 §6.5.2)
	blockLen  int     // compressed bytes so far
	tooLarge  bool
	malformed bool

	sawRegular  bool
	method      string
	path        string
	scheme      bool
	isGRPC      bool
	contentType string
	ctProto     bool // content-type was application/grpc+proto
	encoding    string
	hasTimeout  bool
	timeout     time.Duration
	hdrErr      string // set: 400 with this message, like grpc-go
	md          metadata.MD
}

// add records one header field, validating it per RFC 9113 §8.2-8.3 and
// the gRPC spec, and turning the rest into metadata like grpc-go.
func (hs *headerState) add(f hpack.HeaderField) {
	name, value := f.Name, f.Value
	if strings.HasPrefix(name, ":") {
		if hs.sawRegular {
			hs.malformed = true // pseudo-header after a regular one
			return
		}
		switch name {
		case ":method":
			if hs.method != "" {
				hs.malformed = true
			}
			hs.method = value
		case ":path":
			if hs.path != "" || value == "" {
				hs.malformed = true
			}
			hs.path = value
		case ":scheme":
			if hs.scheme {
				hs.malformed = true
			}
			hs.scheme = true
		case ":authority":
			hs.addMD(name, value)
		default:
			hs.malformed = true // :status or unknown pseudo-header
		}
		return
	}
	hs.sawRegular = true
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			hs.malformed = true
			return
		}
	}
	switch name {
	case "content-type":
		sub, ok := contentSubtype(value)
		if !ok {
			hs.contentType = value
			return
		}
		hs.isGRPC = true
		hs.ctProto = sub == "proto"
		hs.addMD(name, value)
	case "grpc-encoding":
		hs.encoding = value
	case "grpc-timeout":
		d, err := decodeTimeout(value)
		if err != nil {
			hs.hdrErr = fmt.Sprintf("malformed grpc-timeout: %v", err)
			return
		}
		hs.hasTimeout, hs.timeout = true, d
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		hs.malformed = true // connection-specific headers (RFC 9113 §8.2.2)
	case "te":
		// RFC 9113 wants "trailers" only; grpc-go tolerates anything.
	case "user-agent":
		hs.addMD(name, value)
	default:
		if isReservedHeader(name) {
			return
		}
		if strings.HasSuffix(name, "-bin") {
			b, err := decodeBinHeader(value)
			if err != nil {
				hs.hdrErr = fmt.Sprintf("malformed binary metadata %q in header %q: %v", value, name, err)
				return
			}
			value = string(b)
		}
		hs.addMD(name, value)
	}
}

func (hs *headerState) addMD(k, v string) {
	if hs.md == nil {
		hs.md = make(metadata.MD, 4)
	}
	hs.md[k] = append(hs.md[k], v)
}

// contentSubtype reports whether ct is application/grpc[+subtype][;params]
// and returns the lower-cased subtype ("" for none); only proto is served.
func contentSubtype(ct string) (string, bool) {
	const base = "application/grpc"
	if len(ct) < len(base) || !strings.EqualFold(ct[:len(base)], base) {
		return "", false
	}
	rest := ct[len(base):]
	if i := strings.IndexByte(rest, ';'); i >= 0 {
		rest = rest[:i]
	}
	switch {
	case rest == "":
		return "", true
	case rest[0] == '+':
		sub := strings.ToLower(strings.TrimSpace(rest[1:]))
		return sub, sub == "proto"
	default:
		return "", false
	}
}

// isReservedHeader is grpc-go's list of headers that are not metadata.
func isReservedHeader(h string) bool {
	if h != "" && h[0] == ':' {
		return true
	}
	switch h {
	case "content-type", "user-agent", "grpc-message-type", "grpc-encoding",
		"grpc-message", "grpc-status", "grpc-timeout", "grpc-status-details-bin", "te":
		return true
	}
	return false
}

func decodeBinHeader(v string) ([]byte, error) {
	if len(v)%4 == 0 {
		return base64.StdEncoding.DecodeString(v)
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// decodeTimeout parses a grpc-timeout value: up to 8 digits and a unit.
func decodeTimeout(s string) (time.Duration, error) {
	if len(s) < 2 || len(s) > 9 {
		return 0, fmt.Errorf("timeout string has bad length: %q", s)
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, fmt.Errorf("timeout unit is not recognized: %q", s)
	}
	t, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, err
	}
	if t > uint64(math.MaxInt64/int64(unit)) {
		return math.MaxInt64, nil
	}
	return time.Duration(t) * unit, nil
}

// encodeGrpcMessage percent-encodes a status message as the gRPC spec asks:
// bytes outside ' '..'~', and '%', become %XX.
func encodeGrpcMessage(msg string) string {
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	var sb strings.Builder
	const hex = "0123456789ABCDEF"
	for len(msg) > 0 {
		r, size := utf8.DecodeRuneInString(msg)
		if r == utf8.RuneError && size == 1 {
			// Invalid UTF-8 is sent as U+FFFD, like grpc-go.
			for _, b := range []byte(string(r)) {
				sb.WriteByte('%')
				sb.WriteByte(hex[b>>4])
				sb.WriteByte(hex[b&15])
			}
			msg = msg[1:]
			continue
		}
		for i := 0; i < size; i++ {
			b := msg[i]
			if size == 1 && b >= ' ' && b <= '~' && b != '%' {
				sb.WriteByte(b)
				continue
			}
			sb.WriteByte('%')
			sb.WriteByte(hex[b>>4])
			sb.WriteByte(hex[b&15])
		}
		msg = msg[size:]
	}
	return sb.String()
}

// encodeField writes one header field with the connection's encoder; wmu
// must be held and c.hw.b must be the destination.
func (c *conn) encodeField(name, value string) {
	c.henc.WriteField(hpack.HeaderField{Name: name, Value: value})
}

// encodeMD writes user metadata: reserved keys are skipped, "-bin" values
// base64-encoded.
func (c *conn) encodeMD(md metadata.MD) {
	for k, vs := range md {
		k = strings.ToLower(k)
		if isReservedHeader(k) {
			continue
		}
		bin := strings.HasSuffix(k, "-bin")
		for _, v := range vs {
			if bin {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			c.encodeField(k, v)
		}
	}
}

func contentTypeFor(ctProto bool) string {
	if ctProto {
		return "application/grpc+proto"
	}
	return "application/grpc"
}

// appendHeaderBlock appends a header block produced by enc as HEADERS (plus
// CONTINUATION frames if it exceeds maxFrame); wmu must be held.
func (c *conn) appendHeaderBlock(b []byte, sid uint32, endStream bool, maxFrame int, enc func()) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeaderLen)...)
	c.hw.b = b
	enc()
	b = c.hw.b
	c.hw.b = nil
	block := len(b) - start - frameHeaderLen
	flags := hpackFlags(endStream)
	if block <= maxFrame {
		appendFrameHeaderRaw(b[start:start], block, 0x1, flags|0x4, sid)
		return b
	}
	// Rare: split into HEADERS + CONTINUATION.
	blk := append([]byte(nil), b[start+frameHeaderLen:]...)
	b = b[:start]
	first := true
	for len(blk) > 0 {
		n := min(len(blk), maxFrame)
		var f uint8
		typ := uint8(0x9) // CONTINUATION
		if first {
			typ, f = 0x1, flags
		}
		if n == len(blk) {
			f |= 0x4 // END_HEADERS
		}
		b = appendFrameHeaderRaw(b, n, typ, f, sid)
		b = append(b, blk[:n]...)
		blk, first = blk[n:], false
	}
	return b
}

func hpackFlags(endStream bool) uint8 {
	if endStream {
		return 0x1
	}
	return 0
}

func appendFrameHeaderRaw(b []byte, length int, t, f uint8, sid uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), t, f,
		byte(sid>>24)&0x7f, byte(sid>>16), byte(sid>>8), byte(sid))
}

// encodeStatus writes grpc-status, grpc-message and grpc-status-details-bin.
func (c *conn) encodeStatus(s *status.Status) {
	c.encodeField("grpc-status", strconv.Itoa(int(s.Code())))
	if m := s.Message(); m != "" {
		c.encodeField("grpc-message", encodeGrpcMessage(m))
	}
	if p := s.Proto(); p != nil && len(p.Details) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			c.encodeField("grpc-status-details-bin", base64.RawStdEncoding.EncodeToString(b))
		}
	}
}
