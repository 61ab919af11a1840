package cluster_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestDeadNodeGoesOffline proves a node that vanishes without a goodbye
// (its NATS connection cut, no reconnect possible) has its uids reported
// offline by the others within the node timeout plus one heartbeat, then
// OFFLINE to watchers after the grace period, and pushes to them are
// NOT_FOUND, not sent to a dead node. The cut-off node itself still
// delivers to its own sessions and fails pushes to other nodes' uids with
// UNAVAILABLE.
func TestDeadNodeGoesOffline(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	ctx := context.Background()
	alice := connect(t, a, "alice")
	connect(t, b, "bob")
	eventually(t, "b sees alice", func() bool { return onlineOn(b, "alice", 1) })
	eventually(t, "a sees bob", func() bool { return onlineOn(a, "bob", 1) })
	events := watch(t, b) // after b knows alice: no ONLINE for her

	cut := time.Now()
	a.dialer.Cut()
	eventually(t, "b sees alice offline", func() bool { return onlineOn(b, "alice", 0) })
	took := time.Since(cut)
	if bound := nodeTimeout + heartbeat + 300*time.Millisecond; took > bound { // 300 ms for a loaded machine
		t.Errorf("alice went offline on b %v after a was cut; want within %v", took, bound)
	}
	t.Logf("a's uids offline on b %v after a was cut (node timeout %v, heartbeat %v)", took.Round(time.Millisecond), nodeTimeout, heartbeat)
	if ev := nextEvent(t, events, grace+time.Second); ev.GetType() != presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_OFFLINE || ev.GetUid() != "alice" {
		t.Fatalf("watch event on b %v; want OFFLINE alice", ev)
	}
	if _, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "alice", Payload: text("x")}); status.Code(err) != codes.NotFound {
		t.Errorf("SendToUid(alice) via b after a died = %v; want NotFound", err)
	}

	// a, cut off, still serves its own sessions.
	if r, err := a.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "alice", Payload: text("local")}); err != nil || r.GetDelivered() != 1 {
		t.Errorf("SendToUid(alice) via a, cut off = %v, %v; want delivered 1", r, err)
	}
	if got := alice.push(t); got != "local" {
		t.Errorf("alice got %q; want local", got)
	}
	if _, err := a.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "bob", Payload: text("x")}); status.Code(err) != codes.Unavailable {
		t.Errorf("SendToUid(bob) via a, cut off = %v; want Unavailable", err)
	}
}

// TestNATSOutage proves that while NATS is down a push to a uid on
// another node fails with UNAVAILABLE (never a silent success or a false
// NOT_FOUND) while local delivery goes on, and that once NATS is back the
// nodes reach each other again.
func TestNATSOutage(t *testing.T) {
	ns, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	ctx := context.Background()
	alice, bob := connect(t, a, "alice"), connect(t, b, "bob")
	eventually(t, "b sees alice", func() bool { return onlineOn(b, "alice", 1) })
	port := ns.Addr().(*net.TCPAddr).Port

	ns.Shutdown()
	ns.WaitForShutdown()
	if _, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "alice", Payload: text("x")}); status.Code(err) != codes.Unavailable {
		t.Errorf("SendToUid(alice on a) via b, NATS down = %v; want Unavailable", err)
	}
	if r, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "bob", Payload: text("local")}); err != nil || r.GetDelivered() != 1 {
		t.Errorf("SendToUid(bob on b) via b, NATS down = %v, %v; want delivered 1", r, err)
	}
	if f := bob.next(t); f.GetPush().GetData().GetStringValue() != "local" || f.GetPush().GetSeq() != 0 {
		t.Errorf("bob got %v; want the push, with seq 0 (the uid log cannot number it)", f)
	}
	if _, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "carol", Payload: text("x")}); status.Code(err) != codes.Unavailable {
		t.Errorf("SendToUid(carol, nowhere) via b, NATS down = %v; want Unavailable (b cannot tell)", err)
	}
	// What JetStream keeps cannot be reached: an error, and nothing sent.
	if _, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "bob", Payload: text("keyed"), IdempotencyKey: "k1"}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "nothing was sent") {
		t.Errorf("SendToUid with a key, NATS down = %v; want Unavailable, nothing sent", err)
	}
	if _, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "carol", Payload: text("x"), StoreFor: durationpb.New(time.Minute)}); status.Code(err) != codes.Unavailable {
		t.Errorf("SendToUid(carol, store_for), NATS down = %v; want Unavailable", err)
	}
	if _, err := b.backend.Broadcast(ctx, bcast("x")); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "nothing was sent") {
		t.Errorf("Broadcast, NATS down = %v; want Unavailable, nothing sent (broadcasts are numbered in the cluster's log)", err)
	}
	// A client can still connect to b (its stored pushes wait).
	connect(t, b, "dan")
	select {
	case f := <-bob.frames:
		t.Errorf("bob got %v while NATS was down; want nothing (the keyed push failed)", f)
	default:
	}

	startNATS(t, port)
	eventually(t, "a push through b reaches alice again", func() bool {
		r, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "alice", Payload: text("back")})
		return err == nil && r.GetDelivered() == 1
	})
	if got := alice.push(t); got != "back" {
		t.Errorf("alice got %q; want back", got)
	}
	// b announces its sessions again once it is back on NATS; a learns of
	// bob from that, not from the push that just went through b.
	eventually(t, "a sees bob after NATS came back", func() bool { return onlineOn(a, "bob", 1) })
	// This NATS came back without its store: the nodes create the
	// JetStream assets again, and keys and stored pushes work again.
	eventually(t, "a keyed push through b works again", func() bool {
		r, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "alice", Payload: text("keyed"), IdempotencyKey: "k2"})
		return err == nil && r.GetDelivered() == 1
	})
	if got := alice.push(t); got != "keyed" {
		t.Errorf("alice got %q; want keyed", got)
	}
	r, err := a.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "erin", Payload: text("kept"), StoreFor: durationpb.New(time.Minute)})
	if err != nil || !r.GetStored() {
		t.Fatalf("store after NATS came back = %v, %v", r, err)
	}
	erin := connect(t, b, "erin")
	if got := erin.push(t); got != "kept" {
		t.Errorf("erin got %q; want kept", got)
	}
}
