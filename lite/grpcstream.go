package lite

import (
	"context"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// grpcState is the receive queue of a goroutine-backed (RegisterService)
// stream. Its fields are guarded by the connection's mu.
type grpcState struct {
	q      [][]byte
	qBytes int64 // bytes queued, prefixes included
	held   int64 // flow-control credit withheld while the queue is long
	err    error // io.EOF after the client half-closed, or why the stream ended
	ready  chan struct{}
}

func (g *grpcState) signal() {
	select {
	case g.ready <- struct{}{}:
	default:
	}
}

// push queues one message; it runs on the connection goroutine.
func (g *grpcState) push(st *Stream, b []byte) {
	c := st.c
	c.mu.Lock()
	g.q = append(g.q, b)
	g.qBytes += int64(len(b)) + 5
	c.mu.Unlock()
	g.signal()
}

// fail ends the receive side with err; anything but io.EOF drops what is
// queued.
func (g *grpcState) fail(st *Stream, err error) {
	c := st.c
	c.mu.Lock()
	if g.err == nil {
		g.err = err
		if err != io.EOF {
			g.q, g.qBytes = nil, 0
		}
	}
	c.mu.Unlock()
	g.signal()
}

// recv returns the next message, waiting for it.
func (g *grpcState) recv(st *Stream) ([]byte, error) {
	c := st.c
	for {
		c.mu.Lock()
		if len(g.q) > 0 {
			b := g.q[0]
			g.q[0] = nil
			g.q = g.q[1:]
			g.qBytes -= int64(len(b)) + 5
			var inc int64
			if win := int64(c.srv.opts.InitialWindowSize); g.held > 0 && g.qBytes <= win {
				held := g.held
				g.held = 0
				if !st.remoteDone && !st.ended {
					st.recvUnacked += held
					if st.recvUnacked >= win/4 {
						inc = st.recvUnacked
						st.recvAvail += inc
						st.recvUnacked = 0
					}
				}
			}
			c.mu.Unlock()
			if inc > 0 {
				c.writeControl(0, st.id, inc, 0, 0)
			}
			return b, nil
		}
		if err := g.err; err != nil {
			c.mu.Unlock()
			return nil, err
		}
		c.mu.Unlock()
		select {
		case <-g.ready:
		case <-st.ctx.Done():
			c.mu.Lock()
			err := g.err
			c.mu.Unlock()
			if err == nil {
				return nil, status.FromContextError(st.ctx.Err()).Err()
			}
		}
	}
}

func marshal(m any) ([]byte, error) {
	switch v := m.(type) {
	case proto.Message:
		return proto.Marshal(v)
	case protoadapt.MessageV1:
		return proto.Marshal(protoadapt.MessageV2Of(v))
	}
	return nil, fmt.Errorf("lite: %T is not a protobuf message", m)
}

func unmarshal(b []byte, m any) error {
	switch v := m.(type) {
	case proto.Message:
		return proto.Unmarshal(b, v)
	case protoadapt.MessageV1:
		return proto.Unmarshal(b, protoadapt.MessageV2Of(v))
	}
	return fmt.Errorf("lite: %T is not a protobuf message", m)
}

// waitHandlerSlot blocks the connection's reader while MaxConcurrentStreams
// handler goroutines are running, like grpc-go: a client that opens and
// resets streams at once (rapid reset) cannot pile up handler goroutines
// whose streams are already gone from the stream limit's count.
func (c *conn) waitHandlerSlot() {
	c.mu.Lock()
	for c.handlers >= int(c.srv.opts.MaxConcurrentStreams) {
		c.cond.Wait()
	}
	c.handlers++
	c.mu.Unlock()
}

func (c *conn) handlerDone() {
	c.mu.Lock()
	c.handlers--
	c.cond.Broadcast()
	c.mu.Unlock()
	c.srv.handlerWG.Done()
}

// runUnary serves one unary call on its own goroutine.
func (c *conn) runUnary(st *Stream, h *methodHandler) {
	defer c.handlerDone()
	dec := func(m any) error {
		b, err := st.g.recv(st)
		if err == io.EOF {
			return status.Error(codes.Internal, "lite: the client sent no request message")
		}
		if err != nil {
			return err
		}
		if err := unmarshal(b, m); err != nil {
			return status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
		}
		return nil
	}
	resp, err := h.unary.Handler(h.impl, st.ctx, dec, c.srv.opts.UnaryInterceptor)
	if err != nil {
		st.finish(toStatus(err))
		return
	}
	b, err := marshal(resp)
	if err != nil {
		st.finish(status.Newf(codes.Internal, "grpc: error while marshaling: %v", err))
		return
	}
	if err := st.sendMsg(b); err != nil {
		st.finish(toStatus(err))
		return
	}
	st.finish(statusOK)
}

// runStream serves one streaming call on its own goroutine.
func (c *conn) runStream(st *Stream, h *methodHandler) {
	defer c.handlerDone()
	ss := &serverStream{st: st}
	info := &grpc.StreamServerInfo{
		FullMethod:     st.method,
		IsClientStream: h.stream.ClientStreams,
		IsServerStream: h.stream.ServerStreams,
	}
	var err error
	if ic := c.srv.opts.StreamInterceptor; ic != nil {
		err = ic(h.impl, ss, info, h.stream.Handler)
	} else {
		err = h.stream.Handler(h.impl, ss)
	}
	st.finish(toStatus(err))
}

// serverStream is the grpc.ServerStream of a RegisterService stream.
type serverStream struct{ st *Stream }

var _ grpc.ServerStream = (*serverStream)(nil)

func (ss *serverStream) SetHeader(md metadata.MD) error  { return ss.st.SetHeader(md) }
func (ss *serverStream) SendHeader(md metadata.MD) error { return ss.st.sendHeader(md) }
func (ss *serverStream) SetTrailer(md metadata.MD)       { ss.st.setTrailer(md) }
func (ss *serverStream) Context() context.Context        { return ss.st.ctx }

func (ss *serverStream) SendMsg(m any) error {
	b, err := marshal(m)
	if err != nil {
		return status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
	}
	return ss.st.sendMsg(b)
}

func (ss *serverStream) RecvMsg(m any) error {
	b, err := ss.st.g.recv(ss.st)
	if err != nil {
		return err
	}
	if err := unmarshal(b, m); err != nil {
		return status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
	}
	return nil
}
