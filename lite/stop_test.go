package lite

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestGracefulStop(t *testing.T) {
	addr, s, echoes := echoServer(t, Options{})
	cc := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	sendString(t, cs, "before")
	if got := recvString(t, cs); got != "before" {
		t.Fatal(got)
	}
	e := <-echoes

	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	// The client sees the GOAWAY: its channel leaves READY.
	for st := cc.GetState(); st == connectivity.Ready; st = cc.GetState() {
		if !cc.WaitForStateChange(ctx, st) {
			t.Fatal("channel stayed READY")
		}
	}
	// New RPCs fail: the listener is closed.
	nctx, ncancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := newChatErr(nctx, cc)
	ncancel()
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("new stream after GOAWAY: %v", err)
	}
	// The open stream still works.
	sendString(t, cs, "after")
	if got := recvString(t, cs); got != "after" {
		t.Fatal(got)
	}
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with a stream open")
	case <-time.After(100 * time.Millisecond):
	}
	cs.CloseSend()
	if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatal(err)
	}
	if err := waitErr(t, e.closedErr, 5*time.Second); err != io.EOF {
		t.Fatalf("Closed(%v)", err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop did not return after the last stream finished")
	}
	s.GracefulStop() // idempotent
	s.Stop()
}

// newChatErr opens a stream and returns how its first exchange fails.
func newChatErr(ctx context.Context, cc *grpc.ClientConn) (grpc.ClientStream, error) {
	cs, err := cc.NewStream(ctx, chatDesc, chatMethod)
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(wrapperspb.String("x")); err != nil && err != io.EOF {
		return nil, err
	}
	return nil, cs.RecvMsg(new(wrapperspb.StringValue))
}

func TestStopWithOpenStreams(t *testing.T) {
	s := NewServer(Options{})
	echoes := make(chan *echo, 10)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		e := newEcho(st)
		echoes <- e
		return e
	})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	cc := dial(t, l.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var chats []grpc.ClientStream
	for range 3 {
		cs := newChat(t, ctx, cc)
		sendString(t, cs, "x")
		recvString(t, cs)
		chats = append(chats, cs)
	}
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}

	s.Stop()
	if err := <-served; !errors.Is(err, ErrServerStopped) {
		t.Fatalf("Serve = %v", err)
	}
	for range 3 {
		e := <-echoes
		if err := waitErr(t, e.closedErr, 5*time.Second); status.Code(err) != codes.Unavailable {
			t.Fatalf("Closed(%v), want Unavailable", err)
		}
		<-e.done
	}
	for _, cs := range chats {
		if err := cs.RecvMsg(new(wrapperspb.StringValue)); status.Code(err) != codes.Unavailable {
			t.Fatalf("client stream after Stop: %v", err)
		}
	}
	if _, err := w.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("Watch after Stop: %v", err)
	}
	s.Stop() // idempotent
	if err := s.Serve(l); !errors.Is(err, ErrServerStopped) {
		t.Fatalf("Serve after Stop = %v", err)
	}
}
