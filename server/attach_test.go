package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// chanSender is a Sender whose frames arrive on a channel, for a transport
// that feeds the session itself (Attach) with no goroutine of its own.
type chanSender struct {
	ctx  context.Context
	sent chan *presencev1.ConnectResponse
}

func (c *chanSender) Context() context.Context { return c.ctx }
func (c *chanSender) Send(f *Frame) error {
	c.sent <- f.Msg
	return nil
}

// attached is one session started with Attach.
type attached struct {
	t     *testing.T
	in    *Inbound
	out   *chanSender
	ended chan error
}

func attach(t *testing.T, srv *Server) *attached {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out := &chanSender{ctx: ctx, sent: make(chan *presencev1.ConnectResponse, 64)}
	return attachSender(t, srv, out, out)
}

func (a *attached) next() *presencev1.ConnectResponse {
	a.t.Helper()
	select {
	case m := <-a.out.sent:
		return m
	case <-time.After(5 * time.Second):
		a.t.Fatal("no frame within 5s")
		return nil
	}
}

func (a *attached) end() error {
	a.t.Helper()
	select {
	case err := <-a.ended:
		return err
	case <-time.After(5 * time.Second):
		a.t.Fatal("the session did not end within 5s")
		return nil
	}
}

// TestAttach drives a session the way the lite transport does: frames
// handed in on the caller's goroutine, the end reported through the
// callback with the stream's status.
func TestAttach(t *testing.T) {
	srv := newServerT(t, fastOptions())

	t.Run("identify, ping, client closes", func(t *testing.T) {
		a := attach(t, srv)
		if !a.in.Frame(identify("ada")) {
			t.Fatal("Frame(Identify) said stop")
		}
		if got := a.next().GetIdentified().GetUid(); got != "ada" {
			t.Fatalf("Identified.uid = %q, want ada", got)
		}
		if !a.in.Frame(ping(7)) {
			t.Fatal("Frame(Ping) said stop")
		}
		if got := a.next().GetPong().GetSeq(); got != 7 {
			t.Fatalf("Pong.seq = %d, want 7", got)
		}
		if n := sessionCount(srv); n != 1 {
			t.Fatalf("registry holds %d sessions, want 1", n)
		}
		a.in.Closed(io.EOF)
		if err := a.end(); err != nil {
			t.Fatalf("status after the client closed = %v, want nil (OK)", err)
		}
		waitFor(t, time.Second, "the registry to be empty", func() bool { return sessionCount(srv) == 0 })
	})

	t.Run("no identify", func(t *testing.T) {
		o := fastOptions()
		o.IdentifyTimeout = 50 * time.Millisecond
		srv := newServerT(t, o)
		a := attach(t, srv)
		if code := status.Code(a.end()); code != codes.DeadlineExceeded {
			t.Fatalf("code = %v, want DeadlineExceeded", code)
		}
		if a.in.Frame(identify("late")) {
			t.Fatal("Frame after the end said go on")
		}
	})

	t.Run("bad first frame", func(t *testing.T) {
		a := attach(t, srv)
		a.in.Frame(ping(1))
		if code := status.Code(a.end()); code != codes.FailedPrecondition {
			t.Fatalf("code = %v, want FailedPrecondition", code)
		}
	})

	t.Run("transport fails", func(t *testing.T) {
		a := attach(t, srv)
		a.in.Frame(identify("bob"))
		a.next()
		a.in.Closed(status.Error(codes.Unavailable, "connection lost"))
		if code := status.Code(a.end()); code != codes.Unavailable {
			t.Fatalf("code = %v, want Unavailable", code)
		}
	})

	t.Run("shutdown ends an unidentified session", func(t *testing.T) {
		srv := newServerT(t, fastOptions())
		a := attach(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if code := status.Code(a.end()); code != codes.Unavailable {
			t.Fatalf("code = %v, want Unavailable", code)
		}
		if _, err := srv.Attach(a.out, func(error) {}); status.Code(err) != codes.Unavailable {
			t.Fatalf("Attach while draining: %v, want Unavailable", err)
		}
	})

	t.Run("end races the first frame", func(t *testing.T) {
		// The stream's context ends while Identify is being handed in:
		// the session must end exactly once, with nothing left registered.
		for range 50 {
			ctx, cancel := context.WithCancel(context.Background())
			out := &chanSender{ctx: ctx, sent: make(chan *presencev1.ConnectResponse, 64)}
			ended := make(chan error, 2)
			in, err := srv.Attach(out, func(err error) { ended <- err })
			if err != nil {
				t.Fatal(err)
			}
			go cancel()
			in.Frame(identify("race"))
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				t.Fatal("no end")
			}
			if len(ended) != 0 {
				t.Fatal("ended twice")
			}
		}
		waitFor(t, time.Second, "the registry to be empty", func() bool { return sessionCount(srv) == 0 })
	})
}

func newServerT(t *testing.T, o Options) *Server {
	t.Helper()
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func sessionCount(srv *Server) int {
	_, n := srv.reg.counts()
	return n
}

// TestFrameEncodedOnce proves a shared frame is marshalled once for
// transports that send bytes, and that the bytes are the message.
func TestFrameEncodedOnce(t *testing.T) {
	msg := &presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Push{Push: &presencev1.Push{Id: "p1", Seq: 9}}}
	f := newSharedFrame(msg)
	a, err := f.Encoded()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := f.Encoded()
	if &a[0] != &b[0] {
		t.Fatal("a shared frame was encoded twice")
	}
	var got presencev1.ConnectResponse
	if err := proto.Unmarshal(a, &got); err != nil || !proto.Equal(&got, msg) {
		t.Fatalf("Encoded decodes to %v (%v), want %v", &got, err, msg)
	}
	if len(a) != f.Size() {
		t.Fatalf("len(Encoded) = %d, Size = %d", len(a), f.Size())
	}
}

// batchSender is a chanSender with SendBatch, whose Send can be held so
// that frames queue behind it.
type batchSender struct {
	chanSender
	hold    atomic.Bool
	held    chan struct{} // a Send is being held
	gate    chan struct{} // a held Send returns once this is closed
	batches chan int      // the size of each SendBatch call
}

func newBatchSender(ctx context.Context) *batchSender {
	return &batchSender{
		chanSender: chanSender{ctx: ctx, sent: make(chan *presencev1.ConnectResponse, 64)},
		held:       make(chan struct{}, 1),
		gate:       make(chan struct{}),
		batches:    make(chan int, 64),
	}
}

// attachSender starts a session on out, whose frames arrive on sent.
func attachSender(t *testing.T, srv *Server, out Sender, sent *chanSender) *attached {
	t.Helper()
	a := &attached{t: t, out: sent, ended: make(chan error, 1)}
	in, err := srv.Attach(out, func(err error) { a.ended <- err })
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	a.in = in
	return a
}

func (c *batchSender) Send(f *Frame) error {
	if c.hold.Load() {
		c.held <- struct{}{}
		<-c.gate
	}
	return c.chanSender.Send(f)
}

func (c *batchSender) SendBatch(frames []*Frame) error {
	c.batches <- len(frames)
	for _, f := range frames {
		c.sent <- f.Msg
	}
	return nil
}

// TestWriterBatches: frames queued while the writer is busy go to a
// BatchSender in one call, in order.
func TestWriterBatches(t *testing.T) {
	srv := newServerT(t, fastOptions())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := newBatchSender(ctx)
	a := attachSender(t, srv, out, &out.chanSender)
	a.in.Frame(identify("bea"))
	a.next() // Identified
	out.hold.Store(true)
	push := func(i int) {
		t.Helper()
		req := &presencev1.SendToUidRequest{Uid: "bea", Payload: &presencev1.SendToUidRequest_Data{Data: textData(fmt.Sprint(i))}}
		if resp, err := srv.SendToUid(context.Background(), req); err != nil || resp.GetDelivered() != 1 {
			t.Fatalf("SendToUid %d: %v, %v", i, resp, err)
		}
	}
	push(0) // the writer takes it and is held in Send
	<-out.held
	for i := 1; i < 10; i++ {
		push(i) // queued behind it
	}
	close(out.gate)
	for i := range 10 {
		if got := a.next().GetPush().GetData().GetStringValue(); got != fmt.Sprint(i) {
			t.Fatalf("push %d carried %q", i, got)
		}
	}
	if got := <-out.batches; got != 9 {
		t.Fatalf("the 9 queued pushes went out in a batch of %d", got)
	}
	if len(out.batches) != 0 {
		t.Fatalf("%d more batches, want none", len(out.batches))
	}
	a.in.Closed(io.EOF)
	if err := a.end(); err != nil {
		t.Fatal(err)
	}
}

// directSender is a batchSender with TrySend, which takes frames while it
// has room and can be made to fail.
type directSender struct {
	*batchSender
	room  atomic.Int64 // frames TrySend still takes
	tried atomic.Int64 // TrySend calls
	sends atomic.Int64 // Send and SendBatch calls
	fail  atomic.Bool
}

func (c *directSender) Send(f *Frame) error {
	c.sends.Add(1)
	return c.batchSender.Send(f)
}

func (c *directSender) SendBatch(frames []*Frame) error {
	c.sends.Add(1)
	return c.batchSender.SendBatch(frames)
}

func (c *directSender) TrySend(f *Frame) (bool, error) {
	c.tried.Add(1)
	if c.fail.Load() {
		return false, errors.New("broken pipe")
	}
	if c.room.Add(-1) < 0 {
		c.room.Add(1)
		return false, nil
	}
	c.sent <- f.Msg
	return true, nil
}

// TestDirectSend: a session with nothing queued hands a push to its
// DirectSender's TrySend, with no writer; a push TrySend refuses goes to a
// writer, and while one runs TrySend is not called, so frames stay in
// order. A failing TrySend ends the session and the push is not counted
// as delivered.
func TestDirectSend(t *testing.T) {
	srv := newServerT(t, fastOptions())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &directSender{batchSender: newBatchSender(ctx)}
	a := attachSender(t, srv, out, &out.chanSender)
	in := a.in
	s := in.s
	noWriter := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.writing
	}
	push := func(i int, want uint32) {
		t.Helper()
		req := &presencev1.SendToUidRequest{Uid: "dee", Payload: &presencev1.SendToUidRequest_Data{Data: textData(fmt.Sprint(i))}}
		if resp, err := srv.SendToUid(context.Background(), req); err != nil || resp.GetDelivered() != want {
			t.Fatalf("SendToUid %d: %v, %v; want delivered %d", i, resp, err, want)
		}
	}
	expect := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if got := a.next().GetPush().GetData().GetStringValue(); got != fmt.Sprint(i) {
				t.Fatalf("push %d carried %q", i, got)
			}
		}
	}
	pushesOut := testutil.ToFloat64(srv.metrics.pushesOut)

	in.Frame(identify("dee"))
	if a.next().GetIdentified() == nil { // by the writer: Identified is queued first
		t.Fatal("the first frame is not Identified")
	}
	waitFor(t, time.Second, "the writer to exit", noWriter)

	out.room.Store(3)
	for i := range 3 {
		push(i, 1)
		if !noWriter() {
			t.Fatalf("push %d, taken by TrySend, started a writer", i)
		}
	}
	expect(0, 3)
	if n := out.sends.Load(); n != 1 {
		t.Fatalf("%d Send calls, want 1 (Identified)", n)
	}
	if got := testutil.ToFloat64(srv.metrics.pushesOut) - pushesOut; got != 3 {
		t.Fatalf("pushes out counted %v, want 3", got)
	}

	// TrySend refuses push 3: a writer sends it, and is held in Send.
	out.hold.Store(true)
	push(3, 1)
	<-out.held
	out.hold.Store(false)
	out.room.Store(100)
	tried := out.tried.Load()
	for i := 4; i < 8; i++ {
		push(i, 1) // queued behind push 3, not tried
	}
	if n := out.tried.Load() - tried; n != 0 {
		t.Fatalf("TrySend was called %d times while the writer ran", n)
	}
	close(out.gate)
	expect(3, 8)
	waitFor(t, time.Second, "the writer to exit", noWriter)
	push(8, 1)
	expect(8, 9)
	if n := out.tried.Load() - tried; n != 1 {
		t.Fatalf("TrySend was called %d times for the push after the writer exited, want 1", n)
	}

	out.fail.Store(true)
	push(9, 0)
	err := a.end()
	if cause := asEndError(context.Cause(s.ctx)); cause.Reason != ReasonTransport {
		t.Fatalf("ended by %v (status %v), want a transport failure", cause, err)
	}
}
