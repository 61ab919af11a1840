package server

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestReaperEndsSilentSession proves a client that stops sending while its
// TCP connection stays open (it keeps reading) is ended between the
// heartbeat timeout and timeout+reap interval (plus scheduling slack) after
// its last frame, with Goodbye HEARTBEAT_TIMEOUT and UNAVAILABLE, and
// leaves the registry.
func TestReaperEndsSilentSession(t *testing.T) {
	opts := shortHeartbeat(fastOptions())
	ts := startServer(t, opts)
	cc := ts.dial(t)
	c, _ := connect(t, cc, "silent")
	c.send(ping(1))
	c.next()
	last := time.Now() // the last frame the client sends
	gb := c.wantEnd(5*time.Second, codes.Unavailable, presencev1.GoodbyeReason_GOODBYE_REASON_HEARTBEAT_TIMEOUT)
	elapsed := time.Since(last)
	const slack = 500 * time.Millisecond // scheduling on a shared machine
	if elapsed < opts.HeartbeatTimeout || elapsed > opts.HeartbeatTimeout+opts.ReapInterval+slack {
		t.Errorf("silent session ended %v after its last frame; want within [%v, %v]",
			elapsed, opts.HeartbeatTimeout, opts.HeartbeatTimeout+opts.ReapInterval+slack)
	}
	if !strings.Contains(gb.GetMessage(), "heartbeat timeout") || !gb.GetReconnect() {
		t.Errorf("Goodbye = %v; want reconnect and a message naming the heartbeat timeout", gb)
	}
	waitFor(t, 2*time.Second, "silent session unregistered", func() bool { _, n := ts.srv.Counts(); return n == 0 })
	if _, err := sendTo(t, ts.backend(t), "silent", "x"); status.Code(err) != codes.NotFound {
		t.Errorf("SendToUid after eviction = %v; want NotFound", err)
	}
}

// TestReaperSparesPingingSession proves a client that pings on time
// survives several heartbeat timeouts, beside a silent one that is ended.
func TestReaperSparesPingingSession(t *testing.T) {
	opts := shortHeartbeat(fastOptions())
	ts := startServer(t, opts)
	cc := ts.dial(t)
	alive, id := connect(t, cc, "alive")
	silent, _ := connect(t, cc, "silent")
	interval := id.GetHeartbeatInterval().AsDuration()

	stop := time.Now().Add(4 * opts.HeartbeatTimeout)
	var seq uint64
	for time.Now().Before(stop) {
		seq++
		alive.send(ping(seq))
		if got := alive.next().GetPong().GetSeq(); got != seq {
			t.Fatalf("Pong.seq = %d; want %d", got, seq)
		}
		time.Sleep(interval)
	}
	silent.wantEnd(time.Second, codes.Unavailable, presencev1.GoodbyeReason_GOODBYE_REASON_HEARTBEAT_TIMEOUT)
	resp, err := sendTo(t, ts.backend(t), "alive", "still here")
	if err != nil || resp.GetDelivered() != 1 {
		t.Fatalf("SendToUid(alive) after %d pings = %v, %v; want delivered 1", seq, resp, err)
	}
	if p := alive.nextPush(); p.GetData().GetStringValue() != "still here" {
		t.Errorf("push = %v", p)
	}
}

// TestReapSweep checks the sweep's bookkeeping without sockets: only
// sessions silent past the timeout are ended, with the heartbeat reason.
func TestReapSweep(t *testing.T) {
	srv, err := New(shortHeartbeat(fastOptions()))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	now := time.Now()
	mk := func(uid string, idle time.Duration) *session {
		s := newTestSession(srv, uid)
		s.touch(now.Add(-idle))
		srv.reg.add(s, 10, ReplaceOldest, nil)
		return s
	}
	fresh := mk("fresh", 100*time.Millisecond)
	edge := mk("edge", srv.opts.HeartbeatTimeout-time.Millisecond)
	stale := mk("stale", srv.opts.HeartbeatTimeout+time.Millisecond)
	if n := srv.reap(now); n != 1 {
		t.Fatalf("reap ended %d sessions; want 1", n)
	}
	for _, s := range []*session{fresh, edge} {
		if s.ctx.Err() != nil {
			t.Errorf("session %s ended; it was not silent long enough", s.uid)
		}
	}
	if e := asEndError(contextCause(stale)); e.Reason != ReasonHeartbeatTimeout {
		t.Errorf("stale session cause = %v; want heartbeat_timeout", e)
	}
}

// BenchmarkReapSweep measures one reaper sweep over n live sessions, none
// of them silent (the common case): what the reaper costs every
// ReapInterval. ns/session is the figure that must stay flat as n grows.
func BenchmarkReapSweep(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			srv, err := New(quietOptions())
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			now := time.Now()
			for i := range n {
				s := &session{srv: srv, id: newID(), uid: "u" + strconv.Itoa(i), connectedAt: now}
				s.touch(now)
				srv.reg.add(s, DefaultMaxSessionsPerUid, ReplaceOldest, nil)
			}
			b.ReportAllocs()
			for b.Loop() {
				if ended := srv.reap(now); ended != 0 {
					b.Fatalf("reap ended %d sessions; want 0", ended)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/session")
		})
	}
}
