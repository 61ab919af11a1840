package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestGetPresence proves one uid's presence: online with its sessions
// (ids, labels, connected and last-frame times), then offline with when it
// was last seen; a uid never seen has no last_seen.
func TestGetPresence(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	ctx := context.Background()
	cc := ts.dial(t)
	c1 := open(t, cc, false)
	c1.send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: "alice", Labels: map[string]string{"device": "phone"}}}})
	id1 := c1.next().GetIdentified()
	c2, id2 := connect(t, cc, "alice")
	before := time.Now()
	c2.send(ping(1))
	c2.next()

	resp, err := b.GetPresence(ctx, &presencev1.GetPresenceRequest{Uid: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	p := resp.GetPresence()
	if !p.GetOnline() || p.GetSessionCount() != 2 || len(p.GetSessions()) != 2 || p.GetLastSeen() != nil {
		t.Fatalf("presence = %v; want online with 2 sessions", p)
	}
	s0, s1 := p.GetSessions()[0], p.GetSessions()[1]
	if s0.GetSessionId() != id1.GetSessionId() || s0.GetLabels()["device"] != "phone" || s1.GetSessionId() != id2.GetSessionId() {
		t.Errorf("sessions = %v; want alice's two, oldest first, with labels", p.GetSessions())
	}
	if !p.GetConnectedSince().AsTime().Equal(s0.GetConnectedAt().AsTime()) {
		t.Errorf("connected_since %v; want the oldest session's %v", p.GetConnectedSince().AsTime(), s0.GetConnectedAt().AsTime())
	}
	if lf := s1.GetLastFrameAt().AsTime(); lf.Before(before.Add(-time.Second)) {
		t.Errorf("last_frame_at %v; want the Ping's time (after %v)", lf, before)
	}

	c1.stream.CloseSend()
	c2.stream.CloseSend()
	c1.end(5 * time.Second)
	c2.end(5 * time.Second)
	left := time.Now()
	waitFor(t, 5*time.Second, "alice offline", func() bool {
		r, _ := b.GetPresence(ctx, &presencev1.GetPresenceRequest{Uid: "alice"})
		return !r.GetPresence().GetOnline()
	})
	resp, _ = b.GetPresence(ctx, &presencev1.GetPresenceRequest{Uid: "alice"})
	ls := resp.GetPresence().GetLastSeen().AsTime()
	if resp.GetPresence().GetLastSeen() == nil || ls.After(left.Add(time.Second)) || ls.Before(before) {
		t.Errorf("offline presence = %v; want last_seen about %v", resp.GetPresence(), left)
	}
	resp, _ = b.GetPresence(ctx, &presencev1.GetPresenceRequest{Uid: "nobody"})
	if resp.GetPresence().GetOnline() || resp.GetPresence().GetLastSeen() != nil {
		t.Errorf("never-seen uid = %v; want offline with no last_seen", resp.GetPresence())
	}
	if _, err := b.GetPresence(ctx, &presencev1.GetPresenceRequest{Uid: "a b"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad uid: %v; want InvalidArgument", err)
	}
}

// TestBatchAndCounts proves batch lookups answer every uid in order (up
// to the limit, and no further) and counts match the sessions.
func TestBatchAndCounts(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	ctx := context.Background()
	cc := ts.dial(t)
	for _, uid := range []string{"u1", "u2", "u2", "u5"} {
		connect(t, cc, uid)
	}
	uids := make([]string, MaxBatchUids)
	for i := range uids {
		uids[i] = fmt.Sprintf("u%d", i)
	}
	resp, err := b.BatchGetPresence(ctx, &presencev1.BatchGetPresenceRequest{Uids: uids})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range resp.GetPresences() {
		wantOnline := uids[i] == "u1" || uids[i] == "u2" || uids[i] == "u5"
		if p.GetUid() != uids[i] || p.GetOnline() != wantOnline || len(p.GetSessions()) != 0 {
			t.Fatalf("presences[%d] = %v; want uid %s online=%v without sessions", i, p, uids[i], wantOnline)
		}
	}
	if n := resp.GetPresences()[2].GetSessionCount(); n != 2 {
		t.Errorf("u2 session_count = %d; want 2", n)
	}
	if _, err := b.BatchGetPresence(ctx, &presencev1.BatchGetPresenceRequest{Uids: append(uids, "one-too-many")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("1001 uids: %v; want InvalidArgument", err)
	}
	counts, err := b.GetCounts(ctx, &presencev1.GetCountsRequest{})
	if err != nil || counts.GetOnlineUids() != 3 || counts.GetSessions() != 4 {
		t.Errorf("GetCounts = %v, %v; want 3 uids, 4 sessions", counts, err)
	}
}

// TestListOnlinePagination proves paging returns uids in order and, while
// other uids join and leave between pages, never repeats a uid and never
// skips one that stayed online throughout.
func TestListOnlinePagination(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	ctx := context.Background()
	cc := ts.dial(t)
	var stay []string
	churners := map[string]*testClient{}
	for i := range 25 {
		uid := fmt.Sprintf("stay-%02d", i)
		connect(t, cc, uid)
		stay = append(stay, uid)
		c, _ := connect(t, cc, fmt.Sprintf("churn-%02d", i))
		churners[fmt.Sprintf("churn-%02d", i)] = c
	}
	var got []string
	token := ""
	for page := 0; ; page++ {
		resp, err := b.ListOnline(ctx, &presencev1.ListOnlineRequest{PageSize: 7, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetUids()) > 7 {
			t.Fatalf("page of %d; want at most 7", len(resp.GetUids()))
		}
		got = append(got, resp.GetUids()...)
		// Between pages: some churners leave, new uids join.
		for uid, c := range churners {
			if len(uid)%2 == page%2 {
				c.stream.CloseSend()
				delete(churners, uid)
				break
			}
		}
		connect(t, cc, fmt.Sprintf("new-%02d", page))
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Fatalf("listing %v is not sorted without repeats", got)
	}
	for _, uid := range stay {
		if !slices.Contains(got, uid) {
			t.Errorf("listing skipped %s, which stayed online throughout", uid)
		}
	}
	if _, err := b.ListOnline(ctx, &presencev1.ListOnlineRequest{PageToken: "!!"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad token: %v; want InvalidArgument", err)
	}
	if _, err := b.ListOnline(ctx, &presencev1.ListOnlineRequest{PageSize: 5000}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("page_size 5000: %v; want InvalidArgument", err)
	}
}

// TestKick proves kicking a uid ends all its sessions with Goodbye KICKED
// (ABORTED) carrying the reason and reconnect hint, kicking one session
// leaves the others, and kicking an offline uid is NOT_FOUND.
func TestKick(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	ctx := context.Background()
	cc := ts.dial(t)
	a1, id1 := connect(t, cc, "alice")
	a2, _ := connect(t, cc, "alice")
	resp, err := b.Kick(ctx, &presencev1.KickRequest{Uid: "alice", SessionId: id1.GetSessionId(), Reason: "logged out on this device"})
	if err != nil || resp.GetKicked() != 1 {
		t.Fatalf("Kick one session = %v, %v; want kicked 1", resp, err)
	}
	gb := a1.wantEnd(5*time.Second, codes.Aborted, presencev1.GoodbyeReason_GOODBYE_REASON_KICKED)
	if gb.GetReconnect() || gb.GetMessage() != "a backend ended this session: logged out on this device; do not reconnect automatically" {
		t.Errorf("Goodbye = %v", gb)
	}
	a2.send(ping(1))
	a2.next()
	resp, err = b.Kick(ctx, &presencev1.KickRequest{Uid: "alice", Reconnect: true, ReconnectAfter: durationpbNew(3 * time.Second)})
	if err != nil || resp.GetKicked() != 1 {
		t.Fatalf("Kick uid = %v, %v; want kicked 1", resp, err)
	}
	gb = a2.wantEnd(5*time.Second, codes.Aborted, presencev1.GoodbyeReason_GOODBYE_REASON_KICKED)
	if !gb.GetReconnect() || gb.GetReconnectAfter().AsDuration() != 3*time.Second {
		t.Errorf("Goodbye = %v; want reconnect after 3s", gb)
	}
	waitFor(t, 5*time.Second, "alice gone", func() bool { _, n := ts.srv.Counts(); return n == 0 })
	if _, err := b.Kick(ctx, &presencev1.KickRequest{Uid: "alice"}); status.Code(err) != codes.NotFound {
		t.Errorf("Kick offline uid: %v; want NotFound", err)
	}
}

// watchClient reads a WatchPresence stream into a channel.
type watchClient struct {
	events     chan *presencev1.WatchPresenceResponse
	err        chan error
	initial    []*presencev1.WatchPresenceResponse // before SUBSCRIBED
	subscribed *presencev1.WatchPresenceResponse
}

func watch(t *testing.T, b presencev1.BackendServiceClient, req *presencev1.WatchPresenceRequest) *watchClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := b.WatchPresence(ctx, req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &watchClient{events: make(chan *presencev1.WatchPresenceResponse, 1000), err: make(chan error, 1)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				w.err <- err
				return
			}
			w.events <- ev
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	// Every watch starts with its initial events, then SUBSCRIBED; after
	// it, no event is missed.
	for w.subscribed == nil {
		ev := w.next(t, 5*time.Second)
		if ev.GetType() == presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SUBSCRIBED {
			w.subscribed = ev
		} else if !ev.GetInitial() {
			t.Fatalf("event %v before SUBSCRIBED is not an initial one", ev)
		} else {
			w.initial = append(w.initial, ev)
		}
	}
	return w
}

// next returns the next event, failing after d.
func (w *watchClient) next(t *testing.T, d time.Duration) *presencev1.WatchPresenceResponse {
	t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case err := <-w.err:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
	}
	return nil
}

// none asserts no event arrives within d.
func (w *watchClient) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-w.events:
		t.Fatalf("unexpected event %v", ev)
	case <-time.After(d):
	}
}

// TestWatchPresenceGrace proves the watch stream: ONLINE on a uid's first
// session, nothing for a reconnect within the grace period, OFFLINE once
// the uid has been gone for the whole grace period (timed from when its
// last session ended), seq growing, and the uid filter.
func TestWatchPresenceGrace(t *testing.T) {
	o := fastOptions()
	o.PresenceGrace = 400 * time.Millisecond
	ts := startServer(t, o)
	b := ts.backend(t)
	all := watch(t, b, &presencev1.WatchPresenceRequest{})
	onlyBob := watch(t, b, &presencev1.WatchPresenceRequest{Uids: []string{"bob"}})
	cc := ts.dial(t)

	a, _ := connect(t, cc, "alice")
	ev := all.next(t, 5*time.Second)
	if ev.GetType() != presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_ONLINE || ev.GetUid() != "alice" || ev.GetSeq() != all.subscribed.GetSeq()+1 {
		t.Fatalf("event %v; want alice ONLINE numbered right after SUBSCRIBED (seq %d)", ev, all.subscribed.GetSeq())
	}
	// A reconnect inside the grace period: no OFFLINE/ONLINE pair.
	a.stream.CloseSend()
	a.end(5 * time.Second)
	time.Sleep(o.PresenceGrace / 4)
	a, _ = connect(t, cc, "alice")
	all.none(t, o.PresenceGrace+200*time.Millisecond)

	// Gone for good: OFFLINE after the grace period.
	a.stream.CloseSend()
	a.end(5 * time.Second)
	left := time.Now()
	ev = all.next(t, 5*time.Second)
	if ev.GetType() != presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_OFFLINE || ev.GetUid() != "alice" {
		t.Fatalf("event %v; want alice OFFLINE", ev)
	}
	if waited := time.Since(left); waited < o.PresenceGrace-50*time.Millisecond {
		t.Errorf("OFFLINE came %v after the last session ended; want at least the grace period %v", waited, o.PresenceGrace)
	}
	if at := ev.GetTime().AsTime(); at.After(left.Add(100 * time.Millisecond)) {
		t.Errorf("OFFLINE time %v; want when the session ended (about %v)", at, left)
	}
	connect(t, cc, "bob")
	if ev := onlyBob.next(t, 5*time.Second); ev.GetUid() != "bob" || ev.GetType() != presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_ONLINE {
		t.Fatalf("filtered watcher got %v; want only bob ONLINE", ev)
	}
	if ev2 := all.next(t, 5*time.Second); ev2.GetUid() != "bob" || ev2.GetSeq() <= ev.GetSeq() {
		t.Fatalf("event %v after seq %d; want bob with a higher seq", ev2, ev.GetSeq())
	}
	onlyBob.none(t, 100*time.Millisecond)
}

// TestWatchSessionsAndInitial proves include_initial starts with the uids
// online now and include_sessions adds session events with labels.
func TestWatchSessionsAndInitial(t *testing.T) {
	o := fastOptions()
	o.PresenceGrace = -1 // OFFLINE at once
	ts := startServer(t, o)
	b := ts.backend(t)
	cc := ts.dial(t)
	connect(t, cc, "carol")
	w := watch(t, b, &presencev1.WatchPresenceRequest{IncludeInitial: true, IncludeSessions: true})
	if len(w.initial) != 1 || w.initial[0].GetUid() != "carol" || w.initial[0].GetType() != presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_ONLINE {
		t.Fatalf("initial events %v; want carol's ONLINE only", w.initial)
	}
	c := open(t, cc, false)
	c.send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: "dan", Labels: map[string]string{"device": "tv"}}}})
	id := c.next().GetIdentified()
	want := []presencev1.PresenceEventType{presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_ONLINE, presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_STARTED}
	for _, typ := range want {
		ev := w.next(t, 5*time.Second)
		if ev.GetType() != typ || ev.GetUid() != "dan" {
			t.Fatalf("event %v; want dan %v", ev, typ)
		}
		if typ == presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_STARTED && (ev.GetSessionId() != id.GetSessionId() || ev.GetLabels()["device"] != "tv") {
			t.Errorf("SESSION_STARTED = %v; want session %s with labels", ev, id.GetSessionId())
		}
	}
	c.stream.CloseSend()
	for _, typ := range []presencev1.PresenceEventType{presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_ENDED, presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_OFFLINE} {
		if ev := w.next(t, 5*time.Second); ev.GetType() != typ || ev.GetUid() != "dan" {
			t.Fatalf("event %v; want dan %v", ev, typ)
		}
	}
}

// TestSlowWatcherEnded proves a watcher that stops reading is ended with
// RESOURCE_EXHAUSTED once its queue overflows, while sessions and other
// watchers carry on.
func TestSlowWatcherEnded(t *testing.T) {
	o := fastOptions()
	o.WatchQueue = 16
	ts := startServer(t, o)
	b := ts.backend(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A watcher that never reads, on a connection with a small window.
	slowConn := ts.dial(t)
	slow, err := presencev1.NewBackendServiceClient(slowConn).WatchPresence(ctx, &presencev1.WatchPresenceRequest{IncludeSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	good := watch(t, b, &presencev1.WatchPresenceRequest{Uids: []string{"last"}})
	cc := ts.dial(t)
	// Each connect makes two events; far more than the window and queue.
	for i := range 400 {
		c, _ := connect(t, cc, fmt.Sprintf("u%d-%s", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
		c.stream.CloseSend()
	}
	connect(t, cc, "last")
	if ev := good.next(t, 5*time.Second); ev.GetUid() != "last" {
		t.Fatalf("good watcher got %v", ev)
	}
	// Drain what the slow watcher had buffered; its stream then ends.
	for {
		if _, err := slow.Recv(); err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("slow watcher ended with %v; want ResourceExhausted", err)
			}
			break
		}
	}
}
