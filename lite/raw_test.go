package lite

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawClient speaks HTTP/2 frames directly, for what grpc-go clients cannot
// be made to do.
type rawClient struct {
	t  testing.TB
	nc net.Conn
	fr *http2.Framer
}

// rawFrame is a copy of what the tests look at in a frame.
type rawFrame struct {
	typ      http2.FrameType
	flags    http2.Flags
	streamID uint32
	code     http2.ErrCode // RST_STREAM, GOAWAY
	lastID   uint32        // GOAWAY
	debug    string        // GOAWAY
	ping     [8]byte
	fields   map[string]string // HEADERS
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fr := http2.NewFramer(nc, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	return &rawClient{t: t, nc: nc, fr: fr}
}

// handshake sends the preface and SETTINGS, and reads the server's
// SETTINGS, which must come first.
func (rc *rawClient) handshake() {
	rc.t.Helper()
	if _, err := rc.nc.Write([]byte(http2.ClientPreface)); err != nil {
		rc.t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		rc.t.Fatal(err)
	}
	f, err := rc.read(5 * time.Second)
	if err != nil || f.typ != http2.FrameSettings || f.flags.Has(http2.FlagSettingsAck) {
		rc.t.Fatalf("first server frame: %+v, %v; want SETTINGS", f, err)
	}
	if err := rc.fr.WriteSettingsAck(); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawClient) read(timeout time.Duration) (rawFrame, error) {
	rc.nc.SetReadDeadline(time.Now().Add(timeout))
	f, err := rc.fr.ReadFrame()
	if err != nil {
		return rawFrame{}, err
	}
	h := f.Header()
	rf := rawFrame{typ: h.Type, flags: h.Flags, streamID: h.StreamID}
	switch f := f.(type) {
	case *http2.RSTStreamFrame:
		rf.code = f.ErrCode
	case *http2.GoAwayFrame:
		rf.code, rf.lastID, rf.debug = f.ErrCode, f.LastStreamID, string(f.DebugData())
	case *http2.PingFrame:
		rf.ping = f.Data
	case *http2.MetaHeadersFrame:
		rf.fields = map[string]string{}
		for _, hf := range f.Fields {
			rf.fields[hf.Name] = hf.Value
		}
	}
	return rf, nil
}

// readUntil reads frames until match says yes; other frames are skipped.
func (rc *rawClient) readUntil(timeout time.Duration, match func(rawFrame) bool) rawFrame {
	rc.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := rc.read(time.Until(deadline))
		if err != nil {
			rc.t.Fatalf("waiting for a frame: %v", err)
		}
		if match(f) {
			return f
		}
	}
}

// expectClosed reads until the server closes the connection, returning
// the GOAWAY seen on the way, if any.
func (rc *rawClient) expectClosed(timeout time.Duration) *rawFrame {
	rc.t.Helper()
	deadline := time.Now().Add(timeout)
	var goaway *rawFrame
	for {
		f, err := rc.read(time.Until(deadline))
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				rc.t.Fatal("connection still open")
			}
			return goaway
		}
		if f.typ == http2.FrameGoAway {
			goaway = &f
		}
	}
}

// alive checks that the server answers a PING.
func (rc *rawClient) alive() {
	rc.t.Helper()
	data := [8]byte{'a', 'l', 'i', 'v', 'e', '?', '?', '!'}
	if err := rc.fr.WritePing(false, data); err != nil {
		rc.t.Fatal(err)
	}
	rc.readUntil(5*time.Second, func(f rawFrame) bool {
		return f.typ == http2.FramePing && f.flags.Has(http2.FlagPingAck) && f.ping == data
	})
}

// requestBlock encodes request headers for path.
func requestBlock(path string, extra ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	fields := []string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "test",
		"content-type", "application/grpc", "te", "trailers"}
	for i := 0; i < len(extra); i += 2 {
		replaced := false
		for j := 0; j < len(fields); j += 2 {
			if fields[j] == extra[i] {
				fields[j+1], replaced = extra[i+1], true
			}
		}
		if !replaced {
			fields = append(fields, extra[i], extra[i+1])
		}
	}
	for i := 0; i < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

func (rc *rawClient) headers(sid uint32, block []byte, endStream bool) {
	rc.t.Helper()
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: block, EndHeaders: true, EndStream: endStream}); err != nil {
		rc.t.Fatal(err)
	}
}
