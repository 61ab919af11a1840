package lite

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) {
	if os.Getenv("LITE_DEBUG") != "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	goleak.VerifyTestMain(m)
}

// startServer serves s on a fresh 127.0.0.1 listener; the server is
// stopped when the test ends.
func startServer(t testing.TB, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-done; !errors.Is(err, ErrServerStopped) {
			t.Errorf("Serve returned %v, want ErrServerStopped", err)
		}
	})
	return l.Addr().String()
}

func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

const chatMethod = "/lite.test.Echo/Chat"

var chatDesc = &grpc.StreamDesc{StreamName: "Chat", ServerStreams: true, ClientStreams: true}

// echo is an Events that sends every message back from its own goroutine
// and finishes with OK after the client half-closes.
type echo struct {
	st *Stream

	mu     sync.Mutex
	cond   sync.Cond
	queue  [][]byte
	closed bool

	closedErr chan error // receives the Closed error
	done      chan struct{}
	// finishing, if set, runs just before the echo finishes its stream.
	finishing func()
}

func newEcho(st *Stream) *echo {
	e := &echo{st: st, closedErr: make(chan error, 1), done: make(chan struct{})}
	e.cond.L = &e.mu
	go e.run()
	return e
}

func (e *echo) Msg(b []byte) {
	e.mu.Lock()
	e.queue = append(e.queue, append([]byte(nil), b...))
	e.cond.Signal()
	e.mu.Unlock()
}

func (e *echo) Closed(err error) {
	e.closedErr <- err
	e.mu.Lock()
	e.closed = true
	e.cond.Signal()
	e.mu.Unlock()
}

func (e *echo) run() {
	defer close(e.done)
	for {
		e.mu.Lock()
		for len(e.queue) == 0 && !e.closed {
			e.cond.Wait()
		}
		if len(e.queue) == 0 {
			e.mu.Unlock()
			e.finish(nil)
			return
		}
		b := e.queue[0]
		e.queue = e.queue[1:]
		e.mu.Unlock()
		if err := e.st.Send(b); err != nil {
			e.finish(err)
			return
		}
	}
}

func (e *echo) finish(err error) {
	if e.finishing != nil {
		e.finishing()
	}
	e.st.Finish(err)
}

// echoServer registers an echo event handler on chatMethod; every stream's
// echo is sent on the returned channel.
func echoServer(t testing.TB, o Options) (string, *Server, chan *echo) {
	s := NewServer(o)
	echoes := make(chan *echo, 100)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		e := newEcho(st)
		select {
		case echoes <- e:
		default:
		}
		return e
	})
	return startServer(t, s), s, echoes
}

func newChat(t testing.TB, ctx context.Context, cc *grpc.ClientConn) grpc.ClientStream {
	t.Helper()
	cs, err := cc.NewStream(ctx, chatDesc, chatMethod)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func sendString(t testing.TB, cs grpc.ClientStream, s string) {
	t.Helper()
	if err := cs.SendMsg(wrapperspb.String(s)); err != nil {
		t.Fatalf("SendMsg: %v", err)
	}
}

func recvString(t testing.TB, cs grpc.ClientStream) string {
	t.Helper()
	m := new(wrapperspb.StringValue)
	if err := cs.RecvMsg(m); err != nil {
		t.Fatalf("RecvMsg: %v", err)
	}
	return m.Value
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func waitErr(t testing.TB, ch <-chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatal("timed out")
		return nil
	}
}
