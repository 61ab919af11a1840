package server

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestIdentifyPingPong proves Identified announces the heartbeat settings
// and every Ping gets a Pong echoing its seq with the server's time.
func TestIdentifyPingPong(t *testing.T) {
	opts := fastOptions()
	ts := startServer(t, opts)
	c, id := connect(t, ts.dial(t), "alice")
	if id.GetUid() != "alice" || id.GetSessionId() == "" {
		t.Errorf("Identified = %v; want uid alice and a session id", id)
	}
	if got := id.GetHeartbeatInterval().AsDuration(); got != opts.HeartbeatInterval {
		t.Errorf("heartbeat_interval = %v; want %v", got, opts.HeartbeatInterval)
	}
	if got := id.GetHeartbeatTimeout().AsDuration(); got != opts.HeartbeatTimeout {
		t.Errorf("heartbeat_timeout = %v; want %v", got, opts.HeartbeatTimeout)
	}
	for _, seq := range []uint64{7, 8, 1 << 40} {
		before := time.Now()
		c.send(ping(seq))
		pong := c.next().GetPong()
		if pong.GetSeq() != seq {
			t.Fatalf("Pong.seq = %d; want %d", pong.GetSeq(), seq)
		}
		if st := pong.GetServerTime().AsTime(); st.Before(before.Add(-time.Second)) || st.After(time.Now().Add(time.Second)) {
			t.Errorf("Pong.server_time = %v; want about %v", st, before)
		}
	}
}

// TestStreamEndings proves each protocol row of DESIGN.md's "How a stream
// ends" gives its exact code, a message, and no Goodbye.
func TestStreamEndings(t *testing.T) {
	unknownFrame := &presencev1.ConnectRequest{}
	unknownFrame.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 15, protowire.BytesType), []byte("future")))
	identifyThenUnknown := func(c *testClient) {
		c.send(identify("u1"))
		c.next()
		c.send(unknownFrame)
	}
	tests := []struct {
		name    string
		opts    func(*Options)
		script  func(c *testClient)
		code    codes.Code
		message string // a substring of the status message
	}{
		{"no identify in time", func(o *Options) { o.IdentifyTimeout = 200 * time.Millisecond },
			func(c *testClient) {}, codes.DeadlineExceeded, "no Identify within"},
		{"ping before identify", nil,
			func(c *testClient) { c.send(ping(1)) }, codes.FailedPrecondition, "first frame must be Identify"},
		{"identify twice", nil,
			func(c *testClient) { c.send(identify("u1")); c.next(); c.send(identify("u1")) }, codes.FailedPrecondition, "Identify was sent twice"},
		{"empty first frame", nil,
			func(c *testClient) { c.send(&presencev1.ConnectRequest{}) }, codes.InvalidArgument, "empty frame"},
		{"empty frame after identify", nil,
			func(c *testClient) { c.send(identify("u1")); c.next(); c.send(&presencev1.ConnectRequest{}) }, codes.InvalidArgument, "empty frame"},
		{"unknown first frame", nil,
			func(c *testClient) { c.send(unknownFrame) }, codes.Unimplemented, "does not know the frame"},
		{"unknown frame after identify", nil, identifyThenUnknown, codes.Unimplemented, "does not know the frame"},
		{"empty uid", nil,
			func(c *testClient) { c.send(identify("")) }, codes.InvalidArgument, "uid: empty"},
		{"bad uid characters", nil,
			func(c *testClient) { c.send(identify("alice bob")) }, codes.InvalidArgument, "not allowed"},
		{"uid too long", nil,
			func(c *testClient) { c.send(identify(strings.Repeat("a", MaxUidLen+1))) }, codes.InvalidArgument, "the limit is 128"},
		{"too many labels", nil,
			func(c *testClient) {
				l := map[string]string{}
				for i := range MaxLabels + 1 {
					l[string(rune('a'+i))] = "x"
				}
				c.send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: "u1", Labels: l}}})
			}, codes.InvalidArgument, "labels"},
		{"client half-close", nil,
			func(c *testClient) { c.send(identify("u1")); c.next(); c.stream.CloseSend() }, codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := fastOptions()
			if tt.opts != nil {
				tt.opts(&opts)
			}
			ts := startServer(t, opts)
			c := open(t, ts.dial(t), false)
			tt.script(c)
			frames, err := c.end(5 * time.Second)
			_ = frames
			c.wantEndFrom(frames, err, tt.code, tt.message)
			if _, n := ts.srv.Counts(); n != 0 {
				t.Errorf("%d sessions registered after the stream ended; want 0", n)
			}
		})
	}
}

// wantEndFrom checks a finished stream's status and that no Goodbye came.
func (c *testClient) wantEndFrom(frames []*presencev1.ConnectResponse, err error, code codes.Code, msg string) {
	c.t.Helper()
	st, _ := statusOf(err)
	if st.Code() != code {
		c.t.Fatalf("status = %v %q; want %v", st.Code(), st.Message(), code)
	}
	if !strings.Contains(st.Message(), msg) {
		c.t.Errorf("status message %q; want it to contain %q", st.Message(), msg)
	}
	for _, f := range frames {
		if f.GetGoodbye() != nil {
			c.t.Errorf("got Goodbye %v; this ending sends none", f.GetGoodbye())
		}
	}
}

// TestMessageTooLarge proves a frame over the receive limit ends the
// stream with RESOURCE_EXHAUSTED and other sessions carry on.
func TestMessageTooLarge(t *testing.T) {
	ts := startServer(t, fastOptions(), grpc.MaxRecvMsgSize(1024))
	cc := ts.dial(t)
	other, _ := connect(t, cc, "bob")
	c := open(t, cc, false)
	c.send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{
		Uid: "alice", Labels: map[string]string{"big": strings.Repeat("x", 2000)}}}})
	frames, err := c.end(5 * time.Second)
	c.wantEndFrom(frames, err, codes.ResourceExhausted, "larger than max")
	other.send(ping(3))
	if got := other.next().GetPong().GetSeq(); got != 3 {
		t.Errorf("other session's Pong.seq = %d; want 3", got)
	}
}

// TestNoCompressorRegistered guards the encode-once path: the binary must
// register no compressor, or a push encoded once for one stream could be
// sent uncompressed on a stream that asked for compression (frame.go).
func TestNoCompressorRegistered(t *testing.T) {
	for _, name := range []string{"gzip", "snappy", "zstd", "deflate"} {
		if encoding.GetCompressor(name) != nil {
			t.Errorf("compressor %q is registered; key Frame.PreparedFor by compressor too", name)
		}
	}
}

// TestShutdownSendsGoodbye proves Shutdown gives every session Goodbye
// SHUTDOWN with a reconnect hint inside [min, min+jitter], ends its stream
// with UNAVAILABLE, and refuses new streams. A stream not yet identified
// ends UNAVAILABLE too. (A session whose Identified was out but whose
// open had not returned was once ended by the unidentified path's cause,
// whose Goodbye had no hint; both causes now carry one.)
func TestShutdownSendsGoodbye(t *testing.T) {
	opts := fastOptions()
	ts := startServer(t, opts)
	cc := ts.dial(t)
	var clients []*testClient
	for _, uid := range []string{"a", "b", "b"} {
		c, _ := connect(t, cc, uid)
		clients = append(clients, c)
	}
	anon := open(t, cc, false) // never identifies
	waitFor(t, 5*time.Second, "the unidentified stream to be attached", func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		return ts.srv.active == len(clients)+1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i, c := range clients {
		gb := c.wantEnd(5*time.Second, codes.Unavailable, presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN)
		after := gb.GetReconnectAfter().AsDuration()
		if !gb.GetReconnect() || after < opts.ShutdownReconnectMin || after > opts.ShutdownReconnectMin+opts.ShutdownReconnectJitter {
			t.Errorf("client %d Goodbye = %v; want reconnect after [%v, %v]", i, gb, opts.ShutdownReconnectMin, opts.ShutdownReconnectMin+opts.ShutdownReconnectJitter)
		}
	}
	frames, err := anon.end(5 * time.Second)
	anon.wantEndFrom(frames, err, codes.Unavailable, "shutting down")
	late := open(t, cc, false)
	frames, err = late.end(5 * time.Second)
	late.wantEndFrom(frames, err, codes.Unavailable, "shutting down")
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v; want nil (idempotent)", err)
	}
}

// TestShutdownDuringOpen: Shutdown that comes after a session's
// Identified is out but before its open has returned still gives it
// Goodbye SHUTDOWN with a reconnect hint. (The daemon's shutdown test
// caught this once on a loaded machine: the hook that ends unidentified
// sessions at shutdown won, with a cause that had no hint.) Which of the
// two shutdown paths ends the session is a race, so the test runs 10
// times: with the old cause, 3 in 20 runs failed, so 10 catch it 4 times
// in 5.
func TestShutdownDuringOpen(t *testing.T) {
	for range 10 {
		shutdownDuringOpen(t)
	}
}

func shutdownDuringOpen(t *testing.T) {
	opts := fastOptions()
	ts := startServer(t, opts)
	inOpen, release := make(chan *session, 1), make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(free) // before the server's cleanup Shutdown, which waits for open
	ts.srv.hooks.opened = func(s *session) {
		inOpen <- s
		<-release
	}
	cc := ts.dial(t)
	c, _ := connect(t, cc, "a")
	var s *session
	select {
	case s = <-inOpen:
	case <-time.After(5 * time.Second):
		t.Fatal("open did not reach its end")
	}
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- ts.srv.Shutdown(context.Background()) }()
	select {
	case <-s.ctx.Done(): // ended, by whichever shutdown path came first
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not end the session")
	}
	free()
	gb := c.wantEnd(5*time.Second, codes.Unavailable, presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN)
	after := gb.GetReconnectAfter().AsDuration()
	if !gb.GetReconnect() || after < opts.ShutdownReconnectMin || after > opts.ShutdownReconnectMin+opts.ShutdownReconnectJitter {
		t.Errorf("Goodbye = %v; want reconnect after [%v, %v]", gb, opts.ShutdownReconnectMin, opts.ShutdownReconnectMin+opts.ShutdownReconnectJitter)
	}
	if err := <-shutdownDone; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestPongIsOneAllocation: the Pong that answers every Ping is built in
// one allocation, and is the message it replaced, field for field, with
// its size counted.
func TestPongIsOneAllocation(t *testing.T) {
	now := time.Date(2026, 11, 27, 4, 0, 0, 123456789, time.UTC)
	want := &presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Pong{Pong: &presencev1.Pong{
		Seq: 42, ServerTime: timestamppb.New(now),
	}}}
	f := newPong(42, now)
	if !proto.Equal(f.Msg, want) {
		t.Errorf("newPong = %v; want %v", f.Msg, want)
	}
	if f.Size() != proto.Size(want) || f.Shared() {
		t.Errorf("size %d, shared %v; want %d, false", f.Size(), f.Shared(), proto.Size(want))
	}
	if n := testing.AllocsPerRun(100, func() { newPong(42, now) }); n != 1 {
		t.Errorf("newPong made %v allocations; want 1", n)
	}
}
