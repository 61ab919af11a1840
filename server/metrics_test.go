package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// scrape gathers reg and returns every sample as `name{k="v",...}` (labels
// sorted by name) -> value; a histogram gives its _count and _sum.
func scrape(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
				out[key+"_sum"] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// wantMetrics waits up to 5 s for every named sample to have its wanted
// value (a frame is counted just after the client may have read it), then
// reports those that do not.
func wantMetrics(t *testing.T, reg prometheus.Gatherer, want map[string]float64) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := scrape(t, reg)
		var bad []string
		for _, k := range keys {
			if v, ok := got[k]; !ok {
				bad = append(bad, k+" missing from the scrape")
			} else if v != want[k] {
				bad = append(bad, fmt.Sprintf("%s = %v; want %v", k, v, want[k]))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5s:\n%s", strings.Join(bad, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMetricsFollowSessions proves the engine's metrics follow a script of
// sessions, frames, pushes and endings exactly, gauges included.
func TestMetricsFollowSessions(t *testing.T) {
	ts := startServer(t, fastOptions())
	reg := prometheus.NewRegistry()
	reg.MustRegister(ts.srv.Collector())
	cc := ts.dial(t)
	b := ts.backend(t)

	a1, _ := connect(t, cc, "alice")
	a2, _ := connect(t, cc, "alice")
	bob, _ := connect(t, cc, "bob")
	a1.send(ping(1))
	a1.next()
	if _, err := sendTo(t, b, "alice", "hi"); err != nil {
		t.Fatal(err)
	}
	broadcast(t, b, "all")
	for _, c := range []*testClient{a1, a2} {
		c.nextPush() // SendToUid
	}
	for _, c := range []*testClient{a1, a2, bob} {
		c.nextPush() // Broadcast
	}
	watch(t, b, &presencev1.WatchPresenceRequest{})
	wantMetrics(t, reg, map[string]float64{
		`presence_sessions`:                                             3,
		`presence_online_uids`:                                          2,
		`presence_watchers`:                                             1,
		`presence_frames_received_total{kind="identify"}`:               3,
		`presence_frames_received_total{kind="ping"}`:                   1,
		`presence_frames_received_total{kind="unknown"}`:                0,
		`presence_frames_sent_total{kind="identified"}`:                 3,
		`presence_frames_sent_total{kind="pong"}`:                       1,
		`presence_frames_sent_total{kind="push"}`:                       5,
		`presence_pushes_total{scope="uid"}`:                            1,
		`presence_pushes_total{scope="broadcast"}`:                      1,
		`presence_push_deliveries_total{scope="uid"}`:                   2,
		`presence_push_deliveries_total{scope="broadcast"}`:             3,
		`presence_broadcast_fanout_seconds_count`:                       1,
		`presence_sessions_ended_total{reason="kicked"}`:                0,
		`presence_identify_failures_total{reason="protocol_violation"}`: 0,
		`presence_history_max_bytes`:                                    DefaultHistoryMaxBytes,
		`presence_stored_pushes_expired_total`:                          0,
	})
	if got := scrape(t, reg)["presence_history_bytes"]; got <= 0 {
		t.Errorf("presence_history_bytes = %v after two kept pushes; want > 0", got)
	}

	// Endings: a kick, a client hang-up, and a stream that never identifies.
	if _, err := b.Kick(context.Background(), &presencev1.KickRequest{Uid: "bob"}); err != nil {
		t.Fatal(err)
	}
	bob.wantEnd(5*time.Second, codes.Aborted, presencev1.GoodbyeReason_GOODBYE_REASON_KICKED)
	a2.cancel()
	bad := open(t, cc, false)
	bad.send(ping(1))
	bad.wantEnd(5*time.Second, codes.FailedPrecondition, presencev1.GoodbyeReason_GOODBYE_REASON_UNSPECIFIED)
	wantMetrics(t, reg, map[string]float64{
		`presence_sessions`:                                             1,
		`presence_online_uids`:                                          1,
		`presence_sessions_ended_total{reason="kicked"}`:                1,
		`presence_sessions_ended_total{reason="client_closed"}`:         1,
		`presence_identify_failures_total{reason="protocol_violation"}`: 1,
		`presence_frames_received_total{kind="ping"}`:                   2,
		`presence_frames_sent_total{kind="goodbye"}`:                    1,
	})
}

// TestMetricsPerServer proves each server has its own metrics: two in one
// process register on their own registries and count apart.
func TestMetricsPerServer(t *testing.T) {
	one, two := startServer(t, fastOptions()), startServer(t, fastOptions())
	r1, r2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	if err := r1.Register(one.srv.Collector()); err != nil {
		t.Fatalf("register server one: %v", err)
	}
	if err := r2.Register(two.srv.Collector()); err != nil {
		t.Fatalf("register server two: %v", err)
	}
	connect(t, one.dial(t), "alice")
	if got, want := scrape(t, r1)["presence_sessions"], 1.0; got != want {
		t.Errorf("server one presence_sessions = %v; want %v", got, want)
	}
	if got, want := scrape(t, r2)["presence_sessions"], 0.0; got != want {
		t.Errorf("server two presence_sessions = %v; want %v", got, want)
	}
}

// TestQueueOverflowCounted proves a session whose queue overflows is
// counted once, and a refused token at Identify counts as an auth failure.
func TestQueueOverflowCounted(t *testing.T) {
	opts := quietOptions()
	opts.QueueMaxMessages = 4
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	s := newTestSession(srv, "slow")
	release := make(chan struct{})
	s.conn.(*fakeConn).onMsg = func(*Frame) { <-release }
	f := newFrame(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Pong{Pong: &presencev1.Pong{}}})
	for i := 0; s.enqueue(f) && i < 100; i++ {
	}
	close(release)
	if got := testutil.ToFloat64(srv.metrics.sessionOverflows); got != 1 {
		t.Errorf("session overflows = %v; want 1", got)
	}
	if got := asEndError(contextCause(s)).Reason; got != ReasonSlowConsumer {
		t.Errorf("session ended with %v; want slow_consumer", got)
	}
	srv.metrics.streamEnded(false, ReasonUnauthenticated)
	srv.metrics.streamEnded(true, ReasonPermissionDenied)
	if a, b := testutil.ToFloat64(srv.metrics.authIdentify), testutil.ToFloat64(srv.metrics.authRefresh); a != 1 || b != 1 {
		t.Errorf("auth failures identify %v refresh %v; want 1 and 1", a, b)
	}
}

// TestHotPathCountingDoesNotAllocate proves counting a frame in and out, a
// push and a session's end costs no allocation.
func TestHotPathCountingDoesNotAllocate(t *testing.T) {
	srv, err := New(quietOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	req, id := ping(1), identify("u")
	f := pushFrame(&presencev1.Push{Id: "p"})
	start := time.Now()
	allocs := testing.AllocsPerRun(1000, func() {
		srv.metrics.frameIn(req)
		srv.metrics.frameIn(id)
		srv.metrics.frameOut(f.Msg)
		srv.metrics.pushed(presencev1.PushScope_PUSH_SCOPE_UID, 3)
		srv.metrics.broadcastDone(start, 10)
		srv.metrics.streamEnded(true, ReasonHeartbeatTimeout)
		srv.metrics.sessionOverflows.Inc()
	})
	if allocs != 0 {
		t.Errorf("counting allocates %v times per round; want 0", allocs)
	}
}

// BenchmarkFrameCounting measures what metrics add per frame: finding the
// frame's kind and one atomic add, for a frame received and one sent.
func BenchmarkFrameCounting(b *testing.B) {
	srv, err := New(quietOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	req := ping(1)
	f := pushFrame(&presencev1.Push{Id: "p"})
	id := identify("u")
	b.Run("received_ping", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			srv.metrics.frameIn(req)
		}
	})
	b.Run("received_identify", func(b *testing.B) { // the reflective path
		b.ReportAllocs()
		for b.Loop() {
			srv.metrics.frameIn(id)
		}
	})
	b.Run("sent_push", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			srv.metrics.frameOut(f.Msg)
		}
	})
	b.Run("broadcast_done", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			srv.metrics.broadcastDone(start, 10_000)
		}
	})
}
