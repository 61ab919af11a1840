package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// TestPushesArrive proves pushes to the uid and broadcasts reach OnPush in
// order, with their session, scope and seq.
func TestPushesArrive(t *testing.T) {
	d := startDaemon(t, "127.0.0.1:0", fastServer())
	_, r := startClient(t, Config{Target: d.GRPCAddr(), UID: "alice", Labels: map[string]string{"device": "test"}})
	sid := connected(t, r)
	b := backend(t, d.GRPCAddr())

	for i, text := range []string{"one", "two"} {
		resp := sendText(t, b, "alice", text)
		if resp.GetDelivered() != 1 {
			t.Fatalf("SendToUid(alice) delivered = %d; want 1", resp.GetDelivered())
		}
		p := r.nextPush(t)
		if got := p.Msg.GetData().GetStringValue(); got != text {
			t.Errorf("push %d data = %q; want %q", i, got, text)
		}
		if p.SessionID != sid || p.Msg.GetScope() != presencev1.PushScope_PUSH_SCOPE_UID || p.Msg.GetSeq() != uint64(i+1) || p.Msg.GetId() != resp.GetPushId() {
			t.Errorf("push %d = session %q scope %v seq %d id %q; want %q UID %d %q", i, p.SessionID, p.Msg.GetScope(), p.Msg.GetSeq(), p.Msg.GetId(), sid, i+1, resp.GetPushId())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	bresp, err := b.Broadcast(ctx, &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Data{Data: structpb.NewStringValue("all")}})
	if err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	if p := r.nextPush(t); p.Msg.GetScope() != presencev1.PushScope_PUSH_SCOPE_BROADCAST || p.Msg.GetId() != bresp.GetPushId() {
		t.Errorf("broadcast push = scope %v id %q; want BROADCAST %q", p.Msg.GetScope(), p.Msg.GetId(), bresp.GetPushId())
	}
}

// TestHeartbeatKeepsSessionAlive proves the client pings at the announced
// interval: one session survives several server heartbeat timeouts.
func TestHeartbeatKeepsSessionAlive(t *testing.T) {
	opts := fastServer()
	d := startDaemon(t, "127.0.0.1:0", opts)
	_, r := startClient(t, Config{Target: d.GRPCAddr(), UID: "pinger"})
	sid := connected(t, r)

	time.Sleep(4 * opts.HeartbeatTimeout) // the span under test: nothing may happen in it
	if got := r.allStates(); got[len(got)-1].State != StateConnected {
		t.Fatalf("after %v the last state is %v; want the session %s still connected", 4*opts.HeartbeatTimeout, got[len(got)-1], sid)
	}
	if resp := sendText(t, backend(t, d.GRPCAddr()), "pinger", "still here"); resp.GetDelivered() != 1 {
		t.Errorf("SendToUid(pinger) delivered = %d; want 1", resp.GetDelivered())
	}
	if got := r.nextPush(t); got.SessionID != sid {
		t.Errorf("push arrived on session %q; want the first session %q", got.SessionID, sid)
	}
}

// TestSlowHandlerIsNotServerSilence proves time spent in OnPush does not
// count as a silent server: a handler slower than the heartbeat timeout
// keeps its session.
func TestSlowHandlerIsNotServerSilence(t *testing.T) {
	opts := fastServer()
	d := startDaemon(t, "127.0.0.1:0", opts)
	r := newRecorder()
	handled := make(chan struct{})
	c, err := New(Config{
		Target: d.GRPCAddr(), UID: "slow", Backoff: fastBackoff, OnState: r.onState,
		OnPush: func(*Push) { time.Sleep(2 * opts.HeartbeatTimeout); close(handled) },
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	sid := connected(t, r)
	sendText(t, backend(t, d.GRPCAddr()), "slow", "take your time")
	select {
	case <-handled:
	case <-time.After(waitTimeout):
		t.Fatal("OnPush did not return")
	}
	if got := r.allStates(); got[len(got)-1].State != StateConnected {
		t.Fatalf("after a slow OnPush the last state is %+v; want session %s still connected", got[len(got)-1], sid)
	}
}

// TestReconnectAfterServerRestart proves a client follows Goodbye SHUTDOWN's
// hint, reconnects to a server restarted on the same address, asks
// TokenFunc again, and receives pushes again.
func TestReconnectAfterServerRestart(t *testing.T) {
	opts := fastServer()
	d1 := startDaemon(t, "127.0.0.1:0", opts)
	addr := d1.GRPCAddr()
	var tokens atomic.Int32
	_, r := startClient(t, Config{Target: addr, UID: "phoenix", TokenFunc: func(context.Context) (string, error) {
		return "token-" + string(rune('0'+tokens.Add(1))), nil
	}})
	sid1 := connected(t, r)

	shutdown(t, d1)
	gone := r.skipTo(t, StateDisconnected)
	gb := gone.Goodbye
	if gb.GetReason() != presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN || status.Code(gone.Err) != codes.Unavailable {
		t.Fatalf("disconnect = Goodbye %v, status %v; want SHUTDOWN, Unavailable", gb.GetReason(), status.Code(gone.Err))
	}
	if !gone.Reconnect || gone.RetryIn != gb.GetReconnectAfter().AsDuration() {
		t.Errorf("disconnect Reconnect=%v RetryIn=%v; want true and the hint %v", gone.Reconnect, gone.RetryIn, gb.GetReconnectAfter().AsDuration())
	}

	d2 := startDaemon(t, addr, opts)
	back := r.skipTo(t, StateConnected)
	sid2 := back.SessionID
	// A restarted server has a new broadcast epoch: the client cannot know
	// what it missed and is told so.
	if !back.Lost || back.Identified.GetBroadcastResume() != presencev1.ResumeResult_RESUME_RESULT_LOST {
		t.Errorf("reconnect after a restart: Lost=%v Identified=%v; want Lost", back.Lost, back.Identified)
	}
	if sid2 == sid1 {
		t.Errorf("session id after restart = %q; want a new one", sid2)
	}
	if n := tokens.Load(); n < 2 {
		t.Errorf("TokenFunc asked %d times; want once per attempt, at least 2", n)
	}
	sendText(t, backend(t, d2.GRPCAddr()), "phoenix", "welcome back")
	if got := r.nextPush(t); got.SessionID != sid2 || got.Msg.GetData().GetStringValue() != "welcome back" {
		t.Errorf("push after restart = %q on %q; want %q on %q", got.Msg.GetData().GetStringValue(), got.SessionID, "welcome back", sid2)
	}
}

// TestSilentServerDetected proves a server that stops sending without
// closing the connection is declared dead within the announced heartbeat
// timeout, and the client reconnects on a fresh connection.
func TestSilentServerDetected(t *testing.T) {
	opts := fastServer()
	d := startDaemon(t, "127.0.0.1:0", opts)
	px := startProxy(t, d.GRPCAddr())
	_, r := startClient(t, Config{Target: px.Addr(), UID: "frozen"})
	sid1 := connected(t, r)

	frozeAt := time.Now()
	px.Freeze()
	gone := r.skipTo(t, StateDisconnected)
	took := time.Since(frozeAt)
	if !errors.Is(gone.Err, ErrServerSilent) || !gone.Reconnect {
		t.Fatalf("disconnect = %v, reconnect %v; want ErrServerSilent and a reconnect", gone.Err, gone.Reconnect)
	}
	// The last Pong came at most one interval before the freeze.
	lo, hi := opts.HeartbeatTimeout-opts.HeartbeatInterval-50*time.Millisecond, opts.HeartbeatTimeout+500*time.Millisecond
	if took < lo || took > hi {
		t.Errorf("silence detected %v after the freeze; want between %v and %v", took, lo, hi)
	}

	sid2 := connected(t, r)
	if sid2 == sid1 {
		t.Fatalf("reconnected with the old session id %q", sid1)
	}
	sendText(t, backend(t, d.GRPCAddr()), "frozen", "thawed")
	if got := r.nextPush(t); got.SessionID != sid2 {
		t.Errorf("push arrived on session %q; want the new session %q", got.SessionID, sid2)
	}
}

// TestPermanentErrorStops proves an invalid uid (InvalidArgument) stops the
// client after one attempt and reports why, in state and in Err.
func TestPermanentErrorStops(t *testing.T) {
	d := startDaemon(t, "127.0.0.1:0", fastServer())
	c, r := startClient(t, Config{Target: d.GRPCAddr(), UID: "not a valid uid!"})

	want := []State{StateConnecting, StateDisconnected, StateClosed}
	var got []StateChange
	for range want {
		got = append(got, r.nextState(t))
	}
	for i, s := range got {
		if s.State != want[i] {
			t.Fatalf("states = %v; want %v", got, want)
		}
	}
	if gone := got[1]; status.Code(gone.Err) != codes.InvalidArgument || gone.Reconnect {
		t.Errorf("disconnect = %v, reconnect %v; want InvalidArgument, no reconnect", gone.Err, gone.Reconnect)
	}
	if status.Code(got[2].Err) != codes.InvalidArgument {
		t.Errorf("closed with %v; want the InvalidArgument", got[2].Err)
	}
	select {
	case <-c.Done():
	case <-time.After(waitTimeout):
		t.Fatal("Done not closed after a permanent error")
	}
	if status.Code(c.Err()) != codes.InvalidArgument || !strings.Contains(c.Err().Error(), "uid") {
		t.Errorf("Err() = %v; want InvalidArgument naming the uid", c.Err())
	}
	if n := len(r.allStates()); n != 3 {
		t.Errorf("%d state changes after Closed; want none: %v", n-3, r.allStates())
	}
}

// TestGoodbyeDecidesReconnect proves, against a scripted server, that the
// client stops after Goodbye REPLACED and KICKED without a hint, and
// reconnects after KICKED with one, waiting the hinted time.
func TestGoodbyeDecidesReconnect(t *testing.T) {
	goodbye := func(stream presencev1.PresenceService_ConnectServer, gb *presencev1.Goodbye) error {
		stream.Send(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Goodbye{Goodbye: gb}})
		return status.Error(codes.Aborted, gb.GetMessage())
	}
	for _, tc := range []struct {
		name      string
		gb        *presencev1.Goodbye
		reconnect bool
	}{
		{"replaced", &presencev1.Goodbye{Reason: presencev1.GoodbyeReason_GOODBYE_REASON_REPLACED, Message: "replaced"}, false},
		{"replaced even if the flag says reconnect", &presencev1.Goodbye{Reason: presencev1.GoodbyeReason_GOODBYE_REASON_REPLACED, Reconnect: true}, false},
		{"kicked", &presencev1.Goodbye{Reason: presencev1.GoodbyeReason_GOODBYE_REASON_KICKED, Message: "kicked"}, false},
		{"kicked with hint", &presencev1.Goodbye{Reason: presencev1.GoodbyeReason_GOODBYE_REASON_KICKED, Reconnect: true, ReconnectAfter: durationpb.New(150 * time.Millisecond)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, func(call int, _ *presencev1.Identify, stream presencev1.PresenceService_ConnectServer) error {
				if call == 1 {
					return goodbye(stream, tc.gb)
				}
				return untilClientGoes(stream)
			})
			c, r := startClient(t, Config{Target: f.addr, UID: "u"})
			connected(t, r)
			gone := r.skipTo(t, StateDisconnected)
			if gone.Goodbye.GetReason() != tc.gb.GetReason() || status.Code(gone.Err) != codes.Aborted || gone.Reconnect != tc.reconnect {
				t.Fatalf("disconnect = Goodbye %v, %v, reconnect %v; want %v, Aborted, reconnect %v", gone.Goodbye.GetReason(), gone.Err, gone.Reconnect, tc.gb.GetReason(), tc.reconnect)
			}
			if !tc.reconnect {
				if s := r.nextState(t); s.State != StateClosed || status.Code(c.Err()) != codes.Aborted {
					t.Errorf("after the goodbye: %v, Err() = %v; want Closed with Aborted", s.State, c.Err())
				}
				if n := f.calls.Load(); n != 1 {
					t.Errorf("server saw %d Connect calls; want 1", n)
				}
				return
			}
			if gone.RetryIn != 150*time.Millisecond {
				t.Errorf("RetryIn = %v; want the hint, 150ms", gone.RetryIn)
			}
			if s := r.nextState(t); s.State != StateConnecting || s.Attempt != 2 {
				t.Errorf("after the goodbye: %v attempt %d; want connecting, attempt 2", s.State, s.Attempt)
			}
			connected(t, r)
		})
	}
}

// TestIdentifyCarriesUidTokenLabels proves Identify carries the uid, the
// token and the labels, and that a TokenFunc error fails only that attempt.
func TestIdentifyCarriesUidTokenLabels(t *testing.T) {
	f := startFake(t, func(_ int, _ *presencev1.Identify, stream presencev1.PresenceService_ConnectServer) error {
		return untilClientGoes(stream)
	})
	var asked atomic.Int32
	_, r := startClient(t, Config{
		Target: f.addr, UID: "carol", Labels: map[string]string{"device": "phone"},
		TokenFunc: func(context.Context) (string, error) {
			if asked.Add(1) == 1 {
				return "", errors.New("token service down")
			}
			return "jwt-2", nil
		},
	})
	if s := r.skipTo(t, StateDisconnected); !strings.Contains(s.Err.Error(), "token service down") || !s.Reconnect {
		t.Errorf("first attempt ended with %v, reconnect %v; want the token error and a retry", s.Err, s.Reconnect)
	}
	connected(t, r)
	ids := f.identifies()
	if len(ids) != 1 {
		t.Fatalf("server got %d Identify frames; want 1 (the failed token attempt never dials)", len(ids))
	}
	if id := ids[0]; id.GetUid() != "carol" || id.GetToken() != "jwt-2" || id.GetLabels()["device"] != "phone" {
		t.Errorf("Identify = %v; want uid carol, token jwt-2, label device=phone", id)
	}
}

// TestUidFromToken proves a client with a token and no uid identifies
// with an empty uid and reports the uid the server took from the token.
func TestUidFromToken(t *testing.T) {
	f := startFake(t, func(_ int, _ *presencev1.Identify, stream presencev1.PresenceService_ConnectServer) error {
		return untilClientGoes(stream)
	})
	_, r := startClient(t, Config{Target: f.addr, Token: "jwt"})
	if s := r.skipTo(t, StateConnected); s.UID != "sub-of-jwt" {
		t.Errorf("Connected.UID = %q; want the server's %q", s.UID, "sub-of-jwt")
	}
	if id := f.identifies()[0]; id.GetUid() != "" || id.GetToken() != "jwt" {
		t.Errorf("Identify = %v; want no uid and token jwt", id)
	}
}

// TestUnknownServerFramesIgnored proves a frame from a newer server is
// skipped and the session carries on.
func TestUnknownServerFramesIgnored(t *testing.T) {
	f := startFake(t, func(_ int, _ *presencev1.Identify, stream presencev1.PresenceService_ConnectServer) error {
		unknown := &presencev1.ConnectResponse{}
		unknown.ProtoReflect().SetUnknown([]byte{0x4a, 0x00}) // field 9, empty bytes
		stream.Send(unknown)
		stream.Send(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Push{Push: &presencev1.Push{Id: "after"}}})
		return untilClientGoes(stream)
	})
	_, r := startClient(t, Config{Target: f.addr, UID: "u"})
	connected(t, r)
	if got := r.nextPush(t); got.Msg.GetId() != "after" {
		t.Errorf("push id = %q; want %q", got.Msg.GetId(), "after")
	}
	if got := r.allStates(); got[len(got)-1].State != StateConnected {
		t.Errorf("last state = %v; want still connected", got[len(got)-1].State)
	}
}

// TestRetriesWhileServerDown proves a client keeps retrying a closed port
// with delays inside the backoff windows, and that Close during the wait
// stops it with nothing left running.
func TestRetriesWhileServerDown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	addr := closedPort(t)
	c, r := startClient(t, Config{Target: addr, UID: "u"})
	for i := range 3 {
		s := r.skipTo(t, StateDisconnected)
		if status.Code(s.Err) != codes.Unavailable || !s.Reconnect {
			t.Fatalf("attempt %d ended with %v, reconnect %v; want Unavailable and a retry", i+1, s.Err, s.Reconnect)
		}
		if lo, hi := fastBackoff.Window(i); s.RetryIn < lo || s.RetryIn > hi {
			t.Errorf("retry %d waits %v; want within [%v, %v]", i, s.RetryIn, lo, hi)
		}
		if next := r.nextState(t); next.State != StateConnecting || next.Attempt != i+2 {
			t.Errorf("after retry %d: %v attempt %d; want connecting, attempt %d", i, next.State, next.Attempt, i+2)
		}
	}
	c.Close()
	if got := r.allStates(); got[len(got)-1].State != StateClosed {
		t.Errorf("last state after Close = %v; want closed", got[len(got)-1].State)
	}
	if c.Err() != nil {
		t.Errorf("Err() after Close = %v; want nil", c.Err())
	}
}

// closedPort returns a 127.0.0.1 address with nothing listening.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestCloseEndsSession proves Close ends the server's session, reports
// Disconnected (ErrClosed) then Closed, is idempotent, and leaves no
// goroutine behind.
func TestCloseEndsSession(t *testing.T) {
	d := startDaemon(t, "127.0.0.1:0", fastServer())
	// The daemon's goroutines are not the client's: its keepalive sweeper
	// may start after the snapshot (Serve runs on a goroutine of Start's),
	// and the package's TestMain checks the daemons leave nothing behind.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), goleak.IgnoreTopFunction("github.com/presence-dev/presence/lite.(*Server).sweep"))
	c, r := startClient(t, Config{Target: d.GRPCAddr(), UID: "leaver"})
	sid := connected(t, r)

	c.Close()
	c.Close()
	got := r.allStates()
	n := len(got)
	if n < 2 || got[n-2].State != StateDisconnected || !errors.Is(got[n-2].Err, ErrClosed) || got[n-2].SessionID != sid || got[n-1].State != StateClosed || got[n-1].Err != nil {
		t.Fatalf("last states = %+v; want Disconnected(ErrClosed, %s), Closed(nil)", got, sid)
	}
	waitNoSessions(t, d.Server())
}

// waitNoSessions waits until srv has no live session.
func waitNoSessions(t *testing.T, srv *server.Server) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if _, n := srv.Counts(); n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server still has sessions %v after the client closed", waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNewRejectsBadConfig proves New fails, naming the problem, for a
// config that cannot work, and starts nothing.
func TestNewRejectsBadConfig(t *testing.T) {
	tok := func(context.Context) (string, error) { return "", nil }
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no target", Config{UID: "u"}, "target is empty"},
		{"no uid", Config{Target: "127.0.0.1:1"}, "uid is empty"},
		{"two tokens", Config{Target: "127.0.0.1:1", UID: "u", Token: "t", TokenFunc: tok}, "both token"},
		{"max below min", Config{Target: "127.0.0.1:1", UID: "u", Backoff: Backoff{Min: time.Second, Max: time.Millisecond}}, "below min"},
		{"shrinking multiplier", Config{Target: "127.0.0.1:1", UID: "u", Backoff: Backoff{Multiplier: 0.5}}, "multiplier"},
		{"bad jitter", Config{Target: "127.0.0.1:1", UID: "u", Backoff: Backoff{Jitter: 7}}, "jitter"},
		{"negative timeout", Config{Target: "127.0.0.1:1", UID: "u", HandshakeTimeout: -1}, "handshake timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if err == nil {
				c.Close()
				t.Fatalf("New(%+v) = nil error; want one mentioning %q", tc.cfg, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %q; want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestBackoffResetsAfterStableSession proves retries count up while
// sessions are short and start again from the first window after a session
// that lasted Backoff.ResetAfter.
func TestBackoffResetsAfterStableSession(t *testing.T) {
	const stable = 300 * time.Millisecond
	f := startFake(t, func(call int, _ *presencev1.Identify, stream presencev1.PresenceService_ConnectServer) error {
		if call == 3 {
			time.Sleep(2 * stable) // well past stable, even on a loaded machine
		}
		if call <= 3 {
			return status.Error(codes.Unavailable, "go away")
		}
		return untilClientGoes(stream)
	})
	b := fastBackoff
	b.ResetAfter = stable
	_, r := startClient(t, Config{Target: f.addr, UID: "u", Backoff: b})
	var attempts []int
	for range 4 {
		attempts = append(attempts, r.skipTo(t, StateConnecting).Attempt)
	}
	// Without the reset the fourth would be attempt 4, after the third
	// window; the stable session counts as attempt 1.
	if want := []int{1, 2, 3, 2}; fmt.Sprint(attempts) != fmt.Sprint(want) {
		t.Errorf("attempt numbers = %v; want %v (reset by the third, stable, session)", attempts, want)
	}
}
