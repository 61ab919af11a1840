package lite

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestEventsManyInOrder(t *testing.T) {
	addr, _, echoes := echoServer(t, Options{})
	cc := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	const n = 2000
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if err := cs.SendMsg(wrapperspb.String(fmt.Sprint(i))); err != nil {
				errc <- err
				return
			}
		}
		errc <- cs.CloseSend()
	}()
	for i := range n {
		if got := recvString(t, cs); got != fmt.Sprint(i) {
			t.Fatalf("message %d = %q", i, got)
		}
	}
	if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatalf("after half-close: %v, want io.EOF", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	e := <-echoes
	if err := waitErr(t, e.closedErr, 5*time.Second); err != io.EOF {
		t.Fatalf("Closed(%v), want io.EOF", err)
	}
	<-e.done
}

func TestEventsLargeMessage(t *testing.T) {
	t.Run("default windows", func(t *testing.T) { testLargeMessage(t, Options{}) })
	t.Run("large windows", func(t *testing.T) {
		testLargeMessage(t, Options{InitialWindowSize: 1 << 20, InitialConnWindowSize: 4 << 20})
	})
}

func testLargeMessage(t *testing.T, o Options) {
	addr, _, _ := echoServer(t, o)
	cc := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	for range 3 {
		sendString(t, cs, big)
		if got := recvString(t, cs); got != big {
			t.Fatalf("echo of %d bytes came back as %d bytes", len(big), len(got))
		}
	}
	cs.CloseSend()
	if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatalf("after half-close: %v", err)
	}
}

func TestEventsSlowReader(t *testing.T) {
	addr, _, _ := echoServer(t, Options{})
	// A fixed 64 KiB window (no BDP growth) so that the server really waits.
	cc := dial(t, addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	const n = 1000
	payload := bytes.Repeat([]byte{'x'}, 10<<10)
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			binary.BigEndian.PutUint32(payload, uint32(i))
			if err := cs.SendMsg(wrapperspb.Bytes(payload)); err != nil {
				errc <- err
				return
			}
		}
		errc <- cs.CloseSend()
	}()
	for i := range n {
		if i%100 == 0 {
			time.Sleep(50 * time.Millisecond) // read slowly
		}
		m := new(wrapperspb.BytesValue)
		if err := cs.RecvMsg(m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if len(m.Value) != len(payload) || binary.BigEndian.Uint32(m.Value) != uint32(i) {
			t.Fatalf("message %d: wrong content (len %d, seq %d)", i, len(m.Value), binary.BigEndian.Uint32(m.Value))
		}
	}
	if err := cs.RecvMsg(new(wrapperspb.BytesValue)); err != io.EOF {
		t.Fatalf("after half-close: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestEventsClientCancel(t *testing.T) {
	addr, _, echoes := echoServer(t, Options{})
	cc := dial(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	cs := newChat(t, ctx, cc)
	sendString(t, cs, "hi")
	if got := recvString(t, cs); got != "hi" {
		t.Fatal(got)
	}
	e := <-echoes
	cancel()
	err := waitErr(t, e.closedErr, 5*time.Second)
	if status.Code(err) != codes.Canceled {
		t.Fatalf("Closed(%v), want Canceled", err)
	}
	select {
	case <-e.st.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("stream context not done after cancel")
	}
	<-e.done
}

// funcEvents adapts functions to Events.
type funcEvents struct {
	msg    func([]byte)
	closed func(error)
}

func (f funcEvents) Msg(b []byte) {
	if f.msg != nil {
		f.msg(b)
	}
}

func (f funcEvents) Closed(err error) {
	if f.closed != nil {
		f.closed(err)
	}
}

func TestEventsFinishStatus(t *testing.T) {
	const msg = "msg with % and unicode ü"
	s := NewServer(Options{})
	closed := make(chan error, 1)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		return funcEvents{
			msg:    func([]byte) { st.Finish(status.Error(codes.ResourceExhausted, msg)) },
			closed: func(err error) { closed <- err },
		}
	})
	cc := dial(t, startServer(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		cs := newChat(t, ctx, cc)
		sendString(t, cs, "x")
		err := cs.RecvMsg(new(wrapperspb.StringValue))
		if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != msg {
			t.Fatalf("got %v, want ResourceExhausted %q", err, msg)
		}
	}
	// A status with details reaches the client with them.
	s2 := NewServer(Options{})
	s2.HandleEvents(chatMethod, func(st *Stream) Events {
		sd, _ := status.New(codes.Aborted, "with details").WithDetails(wrapperspb.String("detail"))
		st.Finish(sd.Err())
		return nil
	})
	cc2 := dial(t, startServer(t, s2))
	err := newChat(t, ctx, cc2).RecvMsg(new(wrapperspb.StringValue))
	sd := status.Convert(err)
	if sd.Code() != codes.Aborted || len(sd.Details()) != 1 || sd.Details()[0].(*wrapperspb.StringValue).GetValue() != "detail" {
		t.Fatalf("got %v with details %v", err, sd.Details())
	}
	select {
	case err := <-closed:
		t.Fatalf("Closed(%v) called after Finish", err)
	case <-time.After(100 * time.Millisecond):
	}
}

// flood is a chat stream whose server sends one message over and over,
// from a goroutine of its own, to a client that reads nothing.
type flood struct {
	st      *Stream
	cs      grpc.ClientStream
	sent    atomic.Int64 // Sends that returned nil
	sendErr chan error   // the first Send error
}

// startFlood opens a flood of msg and returns once Send has stopped making
// progress: it is blocked on the client's 64 KiB windows.
func startFlood(t *testing.T, msg []byte) *flood {
	t.Helper()
	s := NewServer(Options{})
	f := &flood{sendErr: make(chan error, 1)}
	streams := make(chan *Stream, 1)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		streams <- st
		return funcEvents{msg: func([]byte) {
			go func() {
				for {
					if err := st.Send(msg); err != nil {
						f.sendErr <- err
						return
					}
					f.sent.Add(1)
				}
			}()
		}}
	})
	cc := dial(t, startServer(t, s), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	f.cs = newChat(t, ctx, cc)
	sendString(t, f.cs, "go") // and read nothing
	f.st = <-streams
	last := int64(-1)
	for n := f.sent.Load(); n != last; n = f.sent.Load() {
		last = n
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case err := <-f.sendErr:
		t.Fatalf("Send failed early: %v", err)
	default:
	}
	return f
}

func TestEventsSendBlockedReleasedByFinish(t *testing.T) {
	f := startFlood(t, bytes.Repeat([]byte{'y'}, 32<<10))
	f.st.Finish(nil)
	err := waitErr(t, f.sendErr, 5*time.Second)
	if status.Code(err) != codes.Canceled && status.Code(err) != codes.Unavailable {
		t.Fatalf("blocked Send returned %v", err)
	}
	t.Logf("sent %d messages of 32 KiB before blocking; Send then returned %v", f.sent.Load(), err)
}

func TestEventsMaxRecvMsgSize(t *testing.T) {
	addr, _, echoes := echoServer(t, Options{MaxRecvMsgSize: 1024})
	cc := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	sendString(t, cs, strings.Repeat("z", 2000))
	err := cs.RecvMsg(new(wrapperspb.StringValue))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.HasPrefix(st.Message(), "grpc: received message larger than max (") || !strings.HasSuffix(st.Message(), " vs. 1024)") {
		t.Fatalf("got %v", err)
	}
	e := <-echoes
	if err := waitErr(t, e.closedErr, 5*time.Second); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Closed(%v)", err)
	}
	// The connection still serves other streams.
	cs2 := newChat(t, ctx, cc)
	sendString(t, cs2, "small")
	if got := recvString(t, cs2); got != "small" {
		t.Fatal(got)
	}
	cs2.CloseSend()
	if err := cs2.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatal(err)
	}
}

func TestEventsContext(t *testing.T) {
	s := NewServer(Options{})
	type seen struct {
		md       metadata.MD
		peer     *peer.Peer
		deadline time.Time
		method   string
	}
	got := make(chan seen, 1)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		var v seen
		v.md, _ = metadata.FromIncomingContext(st.Context())
		v.peer, _ = peer.FromContext(st.Context())
		v.deadline, _ = st.Context().Deadline()
		v.method, _ = grpc.Method(st.Context())
		got <- v
		return funcEvents{closed: func(error) { st.Finish(nil) }}
	})
	cc := dial(t, startServer(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-key", "v1", "x-data-bin", "\x00\xffbin")
	cs := newChat(t, ctx, cc)
	cs.CloseSend()
	if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatal(err)
	}
	v := <-got
	if firstOf(v.md["x-key"]) != "v1" || firstOf(v.md["x-data-bin"]) != "\x00\xffbin" {
		t.Errorf("metadata = %v", v.md)
	}
	if len(v.md[":authority"]) != 1 || len(v.md["user-agent"]) != 1 || len(v.md["content-type"]) != 1 {
		t.Errorf("metadata lacks :authority, user-agent or content-type: %v", v.md)
	}
	for k := range v.md {
		if k == "te" || k == "grpc-timeout" || k == ":path" {
			t.Errorf("reserved header %q in metadata", k)
		}
	}
	if v.peer == nil || v.peer.Addr == nil || v.peer.LocalAddr == nil {
		t.Errorf("peer = %+v", v.peer)
	}
	if d := time.Until(v.deadline); d <= 5*time.Second || d > 7*time.Second {
		t.Errorf("deadline in %v, want about 7s", d)
	}
	if v.method != chatMethod {
		t.Errorf("grpc.Method = %q", v.method)
	}
}

func TestEventsMaxConcurrentStreams(t *testing.T) {
	var mu sync.Mutex
	active, maxActive := 0, 0
	s := NewServer(Options{MaxConcurrentStreams: 2})
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		mu.Lock()
		active++
		maxActive = max(maxActive, active)
		mu.Unlock()
		e := newEcho(st)
		// A stream stops counting when its handler finishes it: the
		// transport frees its slot then, before the trailers go out.
		e.finishing = func() {
			mu.Lock()
			active--
			mu.Unlock()
		}
		return e
	})
	cc := dial(t, startServer(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var open []grpc.ClientStream
	for i := range 2 {
		cs := newChat(t, ctx, cc)
		sendString(t, cs, fmt.Sprint(i))
		if got := recvString(t, cs); got != fmt.Sprint(i) {
			t.Fatal(got)
		}
		open = append(open, cs)
	}
	// grpc-go honours SETTINGS_MAX_CONCURRENT_STREAMS: NewStream of the
	// third stream blocks on the client until a slot frees up, so it ends
	// with DeadlineExceeded; the server never sees it.
	tctx, tcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	third, err := cc.NewStream(tctx, chatDesc, chatMethod)
	if err == nil {
		third.SendMsg(wrapperspb.String("third"))
		err = third.RecvMsg(new(wrapperspb.StringValue))
	}
	tcancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("third stream: %v, want DeadlineExceeded while the client waits for a slot", err)
	}
	// Free a slot; a new stream then works.
	open[0].CloseSend()
	if err := open[0].RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatal(err)
	}
	cs := newChat(t, ctx, cc)
	sendString(t, cs, "later")
	if got := recvString(t, cs); got != "later" {
		t.Fatal(got)
	}
	for _, c := range []grpc.ClientStream{open[1], cs} {
		c.CloseSend()
		if err := c.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if maxActive > 2 {
		t.Fatalf("%d streams were active at once", maxActive)
	}
}

// Response headers larger than a frame go out as HEADERS + CONTINUATION.
func TestEventsLargeResponseHeader(t *testing.T) {
	big := strings.Repeat("h", 40<<10)
	s := NewServer(Options{})
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		if err := st.SetHeader(metadata.Pairs("big", big)); err != nil {
			t.Error(err)
		}
		return funcEvents{
			msg: func(b []byte) {
				st.Send(b)
				if err := st.SetHeader(metadata.Pairs("late", "x")); err == nil {
					t.Error("SetHeader after Send succeeded")
				}
			},
			closed: func(error) { st.Finish(nil) },
		}
	})
	cc := dial(t, startServer(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	sendString(t, cs, "x")
	if got := recvString(t, cs); got != "x" {
		t.Fatal(got)
	}
	h, err := cs.Header()
	if err != nil || firstOf(h["big"]) != big {
		t.Fatalf("header of %d bytes, err %v", len(firstOf(h["big"])), err)
	}
	cs.CloseSend()
	if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatal(err)
	}
}

// TestEventsFinishWhileClientNotReading: a stream finished while its
// client reads nothing (a slow consumer's end) never leaves a message
// half-sent, so once the client reads again it gets whole messages and
// then exactly the status Finish gave, not a torn message (Internal).
func TestEventsFinishWhileClientNotReading(t *testing.T) {
	msg, err := proto.Marshal(wrapperspb.String(strings.Repeat("y", 1000)))
	if err != nil {
		t.Fatal(err)
	}
	f := startFlood(t, msg)
	f.st.Finish(status.Error(codes.ResourceExhausted, "read too slowly"))
	waitErr(t, f.sendErr, 5*time.Second)
	var got int64
	for {
		m := new(wrapperspb.StringValue)
		err := f.cs.RecvMsg(m)
		if err != nil {
			if s, _ := status.FromError(err); s.Code() != codes.ResourceExhausted || s.Message() != "read too slowly" {
				t.Fatalf("after %d whole messages the stream ended with %v; want ResourceExhausted \"read too slowly\"", got, err)
			}
			break
		}
		if len(m.Value) != 1000 {
			t.Fatalf("message %d has %d bytes; want 1000", got, len(m.Value))
		}
		got++
	}
	if got != f.sent.Load() {
		t.Fatalf("client read %d messages; Send returned nil for %d", got, f.sent.Load())
	}
}
