package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Conn is the transport under one session: it receives client frames and
// sends server frames. The session core knows nothing else about it, so the
// gRPC Connect stream and other transports (a WebSocket bridge) share the
// same session machinery.
//
// Recv is called by the session's reader goroutine only and Send by its
// writer only; they may run at the same time. Both must return once
// Context is done or the transport has failed.
type Conn interface {
	Sender
	Recv() (*presencev1.ConnectRequest, error)
}

// Sender is the sending half of a session's transport: Send is called by
// the session's writer only, one frame at a time; the context is done when
// the stream ends.
type Sender interface {
	Context() context.Context
	Send(*Frame) error
}

// A BatchSender is a Sender that also sends several frames in one call,
// in order and more cheaply than one at a time (lite: in one write). The
// session's writer uses SendBatch when it finds more than one frame
// queued, so a session that fell behind a burst catches up in batches.
type BatchSender interface {
	Sender
	SendBatch([]*Frame) error
}

// A DirectSender is a Sender that can also take a frame without waiting,
// when the transport has room for it at once (lite: the client's windows
// hold it and the connection's write queue is short), and then writes it
// on its own. A session with nothing queued hands a frame to TrySend
// instead of starting a writer, so a broadcast to idle sessions starts no
// goroutine per session, and the many streams of one connection share one
// write.
type DirectSender interface {
	Sender
	// TrySend takes f and reports true, or reports false having taken
	// nothing, in which case the session queues f for its writer. It must
	// not block: it is called under the session's lock (and, for a push
	// to a uid, the registry's). It is never called while a Send or
	// SendBatch of the session runs. An error means the stream failed.
	TrySend(*Frame) (bool, error)
}

// Frame is one server frame on its way to one or many sessions. A frame
// shared by many sessions (every push) is encoded once per codec and
// compressor, not once per session; it is never modified after it is built.
type Frame struct {
	Msg    *presencev1.ConnectResponse
	size   int  // encoded size, for queue accounting
	shared bool // sent to many sessions: encode once and reuse

	mu       sync.Mutex
	prepared map[string]*grpc.PreparedMsg // by content type; guarded by mu
	encoded  atomic.Pointer[[]byte]       // the protobuf encoding, for transports that take bytes; set once, under mu
}

// newFrame wraps a message for one session; size is computed once here.
func newFrame(m *presencev1.ConnectResponse) *Frame {
	return &Frame{Msg: m, size: proto.Size(m)}
}

// pongFrame is a Pong and its Frame in one allocation. Every session
// answers a Ping every heartbeat interval: at a million sessions pinging
// every 10 s that is 100,000 Pongs a second, and building each from its
// five parts (frame, response, oneof wrapper, Pong, timestamp) took four
// allocations more than this.
type pongFrame struct {
	frame Frame
	resp  presencev1.ConnectResponse
	wrap  presencev1.ConnectResponse_Pong
	pong  presencev1.Pong
	at    timestamppb.Timestamp
}

// newPong is the frame that answers Ping seq at now.
func newPong(seq uint64, now time.Time) *Frame {
	p := new(pongFrame)
	p.at.Seconds, p.at.Nanos = now.Unix(), int32(now.Nanosecond())
	p.pong.Seq, p.pong.ServerTime = seq, &p.at
	p.wrap.Pong = &p.pong
	p.resp.Frame = &p.wrap
	p.frame.Msg = &p.resp
	p.frame.size = proto.Size(&p.resp)
	return &p.frame
}

// newSharedFrame wraps a message that goes to many sessions (a push).
func newSharedFrame(m *presencev1.ConnectResponse) *Frame {
	return &Frame{Msg: m, size: proto.Size(m), shared: true}
}

// Shared reports whether the frame goes to many sessions.
func (f *Frame) Shared() bool { return f.shared }

// Size is the frame's encoded size in bytes.
func (f *Frame) Size() int { return f.size }

// PreparedFor returns the frame encoded for stream, encoding it only the
// first time a stream with the same codec and compressor asks. key names
// the codec (the request's content type). The compressor needs no key: a
// server responds with the compressor its client used, and this binary
// registers none (a test checks that), so every response is uncompressed.
func (f *Frame) PreparedFor(stream grpc.ServerStream, key string) (*grpc.PreparedMsg, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pm, ok := f.prepared[key]; ok {
		return pm, nil
	}
	pm := new(grpc.PreparedMsg)
	if err := pm.Encode(stream, f.Msg); err != nil {
		return nil, err
	}
	if f.prepared == nil {
		f.prepared = make(map[string]*grpc.PreparedMsg, 1)
	}
	f.prepared[key] = pm
	return pm, nil
}

// Encoded returns the frame's protobuf encoding, for transports that send
// bytes (the lite transport). A shared frame is encoded once and the bytes
// are shared: callers must not modify them.
func (f *Frame) Encoded() ([]byte, error) {
	if !f.shared {
		return proto.Marshal(f.Msg)
	}
	if b := f.encoded.Load(); b != nil {
		return *b, nil // every session after the first: no lock
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if b := f.encoded.Load(); b != nil {
		return *b, nil
	}
	b, err := proto.Marshal(f.Msg)
	if err != nil {
		return nil, err
	}
	f.encoded.Store(&b)
	return b, nil
}

// grpcConn adapts the Connect stream to Conn.
type grpcConn struct {
	stream presencev1.PresenceService_ConnectServer
	key    string // the stream's codec, as its content type; see Frame.PreparedFor
}

var _ Conn = (*grpcConn)(nil)

func newGRPCConn(stream presencev1.PresenceService_ConnectServer) *grpcConn {
	key := "application/grpc"
	if md, ok := metadata.FromIncomingContext(stream.Context()); ok {
		if ct := md.Get("content-type"); len(ct) > 0 {
			key = ct[0]
		}
	}
	return &grpcConn{stream: stream, key: key}
}

func (c *grpcConn) Context() context.Context                  { return c.stream.Context() }
func (c *grpcConn) Recv() (*presencev1.ConnectRequest, error) { return c.stream.Recv() }

func (c *grpcConn) Send(f *Frame) error {
	if !f.shared {
		return c.stream.Send(f.Msg)
	}
	pm, err := f.PreparedFor(c.stream, c.key)
	if err != nil {
		return err
	}
	return c.stream.SendMsg(pm)
}
