package server

import (
	"context"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// scriptConn replays client frames, then reports a half-close.
type scriptConn struct {
	ctx    context.Context
	frames []*presencev1.ConnectRequest
}

func (c *scriptConn) Context() context.Context { return c.ctx }

func (c *scriptConn) Recv() (*presencev1.ConnectRequest, error) {
	if len(c.frames) == 0 {
		return nil, io.EOF
	}
	f := c.frames[0]
	c.frames = c.frames[1:]
	return f, nil
}

func (c *scriptConn) Send(*Frame) error { return nil }

// splitFrames cuts data into length-prefixed protobuf frames (2-byte big
// endian lengths) and keeps those that decode.
func splitFrames(data []byte) []*presencev1.ConnectRequest {
	var out []*presencev1.ConnectRequest
	for len(data) >= 2 && len(out) < 64 {
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		n = min(n, len(data))
		var req presencev1.ConnectRequest
		if proto.Unmarshal(data[:n], &req) == nil {
			out = append(out, &req)
		}
		data = data[n:]
	}
	return out
}

func frameBytes(reqs ...*presencev1.ConnectRequest) []byte {
	var out []byte
	for _, r := range reqs {
		b, _ := proto.Marshal(r)
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out
}

// FuzzConnectFrames runs whole sessions over arbitrary frame sequences: the
// handler must always return, with a status from the table in DESIGN.md,
// and leave nothing registered.
func FuzzConnectFrames(f *testing.F) {
	f.Add(frameBytes(identify("alice"), ping(1), ping(2)))
	f.Add(frameBytes(ping(1)))
	f.Add(frameBytes(identify("alice"), identify("alice")))
	f.Add(frameBytes(&presencev1.ConnectRequest{}))
	f.Add(frameBytes(identify(""), refresh("x")))
	f.Add(frameBytes(identify("alice"), refresh("x"), ping(3)))
	f.Add([]byte{0, 3, 0x7a, 0x01, 0x00})
	opts := fastOptions()
	opts.IdentifyTimeout = 100 * time.Millisecond
	srv, err := New(opts)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.Close)
	allowed := map[codes.Code]bool{
		codes.OK: true, codes.InvalidArgument: true, codes.FailedPrecondition: true, codes.Unimplemented: true,
		codes.ResourceExhausted: true, codes.DeadlineExceeded: true, codes.Unauthenticated: true, codes.PermissionDenied: true,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- srv.Serve(&scriptConn{ctx: ctx, frames: splitFrames(data)}) }()
		select {
		case err := <-done:
			if !allowed[status.Code(err)] {
				t.Fatalf("Serve = %v; not a code the contract allows for client input", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Serve did not return")
		}
		if _, n := srv.Counts(); n != 0 {
			t.Fatalf("%d sessions left registered", n)
		}
	})
}
