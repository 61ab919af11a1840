package cluster_test

import (
	"context"
	"slices"
	"testing"
	"time"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestPresenceIsClusterWide proves every presence query on one node sees
// the sessions of the others: GetPresence (with the remote session's id),
// BatchGetPresence, ListOnline and GetCounts; and a uid that leaves is
// offline everywhere with its last-seen time.
func TestPresenceIsClusterWide(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	alice, _ := connect(t, a, "alice"), connect(t, c, "bob")
	eventually(t, "b sees alice and bob", func() bool { return onlineOn(b, "alice", 1) && onlineOn(b, "bob", 1) })

	p, err := b.backend.GetPresence(ctx, &presencev1.GetPresenceRequest{Uid: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if pr := p.GetPresence(); !pr.GetOnline() || pr.GetSessionCount() != 1 || len(pr.GetSessions()) != 1 || pr.GetSessions()[0].GetSessionId() != alice.id {
		t.Errorf("GetPresence(alice) via b = %v; want online with session %s", pr, alice.id)
	}
	batch, err := b.backend.BatchGetPresence(ctx, &presencev1.BatchGetPresenceRequest{Uids: []string{"alice", "bob", "carol"}})
	if err != nil {
		t.Fatal(err)
	}
	var online []bool
	for _, pr := range batch.GetPresences() {
		online = append(online, pr.GetOnline())
	}
	if !slices.Equal(online, []bool{true, true, false}) {
		t.Errorf("BatchGetPresence(alice, bob, carol) via b online = %v; want [true true false]", online)
	}
	list, err := b.backend.ListOnline(ctx, &presencev1.ListOnlineRequest{PageSize: 1})
	if err != nil || !slices.Equal(list.GetUids(), []string{"alice"}) || list.GetNextPageToken() == "" {
		t.Fatalf("ListOnline(page 1) via b = %v, %v; want [alice] and a next page", list, err)
	}
	list, err = b.backend.ListOnline(ctx, &presencev1.ListOnlineRequest{PageSize: 1, PageToken: list.GetNextPageToken()})
	if err != nil || !slices.Equal(list.GetUids(), []string{"bob"}) {
		t.Fatalf("ListOnline(page 2) via b = %v, %v; want [bob]", list, err)
	}
	counts, err := b.backend.GetCounts(ctx, &presencev1.GetCountsRequest{})
	if err != nil || counts.GetOnlineUids() != 2 || counts.GetSessions() != 2 {
		t.Errorf("GetCounts via b = %v, %v; want 2 uids, 2 sessions", counts, err)
	}

	alice.close()
	eventually(t, "b sees alice offline", func() bool { return onlineOn(b, "alice", 0) })
	p, err = b.backend.GetPresence(ctx, &presencev1.GetPresenceRequest{Uid: "alice"})
	if err != nil || p.GetPresence().GetOnline() || p.GetPresence().GetLastSeen() == nil {
		t.Errorf("GetPresence(alice) via b after she left = %v, %v; want offline with last_seen", p, err)
	}
}

// watch opens WatchPresence on n and returns its events; sessions asks
// for session events too.
func watch(t *testing.T, n *node, sessions ...bool) <-chan *presencev1.WatchPresenceResponse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := n.backend.WatchPresence(ctx, &presencev1.WatchPresenceRequest{IncludeSessions: len(sessions) > 0 && sessions[0]})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	events := make(chan *presencev1.WatchPresenceResponse, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			events <- ev
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	if ev := nextEvent(t, events, time.Second); ev.GetType() != presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SUBSCRIBED {
		t.Fatalf("first watch event %v; want SUBSCRIBED", ev)
	}
	return events
}

func nextEvent(t *testing.T, events <-chan *presencev1.WatchPresenceResponse, within time.Duration) *presencev1.WatchPresenceResponse {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(within):
		t.Fatalf("no watch event within %v", within)
	}
	return nil
}

func noEvent(t *testing.T, events <-chan *presencev1.WatchPresenceResponse, during time.Duration) {
	t.Helper()
	select {
	case ev := <-events:
		t.Fatalf("watch event %v; want none", ev)
	case <-time.After(during):
	}
}

// TestWatchAcrossNodesWithoutFlapping proves a watcher on one node sees
// uids come online and go offline on other nodes, and that a uid moving
// between nodes within the grace period (either order: new session first,
// or old one gone first) produces neither OFFLINE nor ONLINE.
func TestWatchAcrossNodesWithoutFlapping(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	events := watch(t, b)

	onA := connect(t, a, "alice")
	if ev := nextEvent(t, events, time.Second); ev.GetType() != presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_ONLINE || ev.GetUid() != "alice" {
		t.Fatalf("event %v; want ONLINE alice", ev)
	}
	// Move a -> c, the new session first.
	onC := connect(t, c, "alice")
	onA.close()
	noEvent(t, events, grace+200*time.Millisecond)
	// Move c -> a, the old session gone first, back within the grace period.
	onC.close()
	eventually(t, "b sees alice offline", func() bool { return onlineOn(b, "alice", 0) })
	onA = connect(t, a, "alice")
	noEvent(t, events, grace+200*time.Millisecond)

	onA.close()
	ev := nextEvent(t, events, grace+time.Second)
	if ev.GetType() != presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_OFFLINE || ev.GetUid() != "alice" {
		t.Fatalf("event %v; want OFFLINE alice", ev)
	}
}

// TestWatchSessionEventsAcrossNodes proves a watcher asking for session
// events sees another node's sessions start and end, in order around
// ONLINE and OFFLINE, with the session's id.
func TestWatchSessionEventsAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	events := watch(t, b, true)
	alice := connect(t, a, "alice")
	alice.close()
	type want struct {
		typ     presencev1.PresenceEventType
		session string
	}
	for _, w := range []want{
		{presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_ONLINE, ""},
		{presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_STARTED, alice.id},
		{presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_ENDED, alice.id},
		{presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_OFFLINE, ""},
	} {
		ev := nextEvent(t, events, grace+time.Second)
		if ev.GetType() != w.typ || ev.GetUid() != "alice" || ev.GetSessionId() != w.session {
			t.Fatalf("event %v; want %v alice %q", ev, w.typ, w.session)
		}
	}
}
