package server

import (
	"context"
	"io"
	"sync/atomic"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// fakeConn is an in-memory Conn for tests and benchmarks with no sockets:
// Recv blocks until the context ends; Send counts frames.
type fakeConn struct {
	ctx   context.Context
	sent  atomic.Int64
	onMsg func(*Frame)
}

var _ Conn = (*fakeConn)(nil)

func (c *fakeConn) Context() context.Context { return c.ctx }

func (c *fakeConn) Recv() (*presencev1.ConnectRequest, error) {
	<-c.ctx.Done()
	return nil, io.EOF
}

func (c *fakeConn) Send(f *Frame) error {
	c.sent.Add(1)
	if c.onMsg != nil {
		c.onMsg(f)
	}
	return nil
}

// newTestSession returns an identified session on a fakeConn, not yet
// registered.
func newTestSession(srv *Server, uid string) *session {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &session{
		srv: srv, conn: &fakeConn{ctx: ctx}, id: newID(), uid: uid,
		ctx: ctx, cancel: cancel, identified: make(chan struct{}),
	}
}

func contextCause(s *session) error { return context.Cause(s.ctx) }
