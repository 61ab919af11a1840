package cluster_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestStoredPushReachesAnyNode proves a push stored through one node (the
// uid offline everywhere) is delivered by whichever node the uid connects
// to, once, in order, flagged replay, and then is gone.
func TestStoredPushReachesAnyNode(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	for i, via := range []*node{a, b} {
		resp, err := via.backend.SendToUid(ctx, &presencev1.SendToUidRequest{
			Uid: "carol", Payload: text(fmt.Sprint("stored ", i)), StoreFor: durationpb.New(time.Minute),
		})
		if err != nil || !resp.GetStored() || resp.GetDelivered() != 0 {
			t.Fatalf("SendToUid(carol, store_for) via node %d = %v, %v; want stored", i, resp, err)
		}
	}
	carol := connect(t, c, "carol")
	for i := range 2 {
		f := carol.next(t)
		p := f.GetPush()
		if p == nil || p.GetData().GetStringValue() != fmt.Sprint("stored ", i) || !p.GetReplay() {
			t.Fatalf("frame %d on c = %v; want the push stored %d, flagged replay", i, f, i)
		}
		if p.GetSeq() == 0 || p.GetEpoch() == "" {
			t.Errorf("stored push %d has seq %d epoch %q on c; want it numbered in the uid's log when delivered", i, p.GetSeq(), p.GetEpoch())
		}
	}
	// Taken once: another session, on another node, gets nothing stored.
	again := connect(t, a, "carol")
	select {
	case f := <-again.frames:
		t.Fatalf("a second session got %v; stored pushes go to one session", f)
	case <-time.After(300 * time.Millisecond):
	}
	// Live pushes go on as usual, to both.
	eventually(t, "b sees carol's two sessions", func() bool { return onlineOn(b, "carol", 2) })
	resp, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "carol", Payload: text("live"), StoreFor: durationpb.New(time.Minute)})
	if err != nil || resp.GetDelivered() != 2 || resp.GetStored() {
		t.Fatalf("SendToUid(carol) online = %v, %v; want delivered 2, not stored", resp, err)
	}
	for _, cl := range []*client{carol, again} {
		if got := cl.push(t); got != "live" {
			t.Errorf("got %q; want live", got)
		}
	}
}

// TestStoredPushTakenOnce proves two sessions of a uid identifying on two
// nodes at once get its stored pushes once each: each stored push is
// taken from the store by one node, numbered in the uid's log and sent
// to every session of the uid, in the log's order.
func TestStoredPushTakenOnce(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	ctx := context.Background()
	const n = 20
	for i := range n {
		_, err := nodes[0].backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "dave", Payload: text(fmt.Sprint(i)), StoreFor: durationpb.New(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg sync.WaitGroup
		cs [2]*client
	)
	for i, via := range []*node{nodes[1], nodes[2]} {
		wg.Go(func() { cs[i] = connectNoFatal(t, via, "dave") })
	}
	wg.Wait()
	if cs[0] == nil || cs[1] == nil {
		t.FailNow()
	}
	for i, c := range cs {
		got := map[string]int{}
		var last uint64
		for range n {
			p := c.pushes(t, 1)[0]
			got[p.GetData().GetStringValue()]++
			if p.GetSeq() <= last {
				t.Errorf("session %d: seq %d after %d; want the log's order", i, p.GetSeq(), last)
			}
			last = p.GetSeq()
		}
		if len(got) != n {
			t.Errorf("session %d got %d distinct stored pushes; want %d: %v", i, len(got), n, got)
		}
		select {
		case f := <-c.frames:
			t.Errorf("session %d: extra frame %v", i, f)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// connectNoFatal is connect for goroutines other than the test's: a
// failure is reported and ends only that goroutine.
func connectNoFatal(t *testing.T, n *node, uid string) *client {
	return connect(goroutineTB{t}, n, uid)
}

// goroutineTB turns Fatal into Error and ends the calling goroutine.
type goroutineTB struct{ *testing.T }

func (g goroutineTB) Fatal(args ...any) { g.Error(args...); runtime.Goexit() }
func (g goroutineTB) Fatalf(format string, args ...any) {
	g.Errorf(format, args...)
	runtime.Goexit()
}

// TestStoredPushRaceIsClosed proves the recheck: a push stored by a node
// that had not yet heard the uid come online (here: put in the store
// after the uid's Identify took what was there) is delivered a heartbeat
// later, by the node that stored it.
func TestStoredPushRaceIsClosed(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	erin := connect(t, b, "erin")
	eventually(t, "a sees erin", func() bool { return onlineOn(a, "erin", 1) })
	push := &presencev1.Push{Id: "late-1", Scope: presencev1.PushScope_PUSH_SCOPE_UID, Payload: &presencev1.Push_Data{Data: structpb.NewStringValue("late")}}
	if err := a.c.Shared().StorePush(context.Background(), "erin", push, time.Minute); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f := erin.next(t)
	if f.GetPush().GetId() != "late-1" || !f.GetPush().GetReplay() {
		t.Fatalf("got %v; want the late stored push, flagged replay", f)
	}
	if d := time.Since(start); d > 3*heartbeat {
		t.Errorf("the late stored push took %v; want about a heartbeat (%v)", d, heartbeat)
	}
}

// TestStoreRefusedPastTheLimit proves the shared store keeps the per-uid
// bound (--history-size) and refuses past it with RESOURCE_EXHAUSTED.
func TestStoreRefusedPastTheLimit(t *testing.T) {
	_, nodes := startClusterWith(t, func(c *daemon.Config) { c.Server.HistorySize = 3 }, "a", "b")
	ctx := context.Background()
	for i := range 3 {
		if _, err := nodes[i%2].backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "frank", Payload: text("x"), StoreFor: durationpb.New(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := nodes[1].backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "frank", Payload: text("x"), StoreFor: durationpb.New(time.Minute)})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "nothing was stored") {
		t.Fatalf("fourth store = %v; want RESOURCE_EXHAUSTED, nothing stored", err)
	}
}

// TestIdempotencyAcrossNodes proves an idempotency key holds on every
// node: a retry through another node answers duplicate with the first
// answer and delivers nothing again; concurrent retries through every
// node deliver once; a reuse with another request is FAILED_PRECONDITION.
func TestIdempotencyAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	gina := connect(t, c, "gina")
	eventually(t, "a and b see gina", func() bool { return onlineOn(a, "gina", 1) && onlineOn(b, "gina", 1) })

	req := &presencev1.SendToUidRequest{Uid: "gina", Payload: text("once"), IdempotencyKey: "order-17"}
	first, err := a.backend.SendToUid(ctx, req)
	if err != nil || first.GetDelivered() != 1 || first.GetDuplicate() {
		t.Fatalf("first = %v, %v", first, err)
	}
	retry, err := b.backend.SendToUid(ctx, req)
	if err != nil || !retry.GetDuplicate() || retry.GetPushId() != first.GetPushId() || retry.GetSeq() != first.GetSeq() {
		t.Fatalf("retry via b = %v, %v; want duplicate of %v", retry, err, first)
	}
	if got := gina.push(t); got != "once" {
		t.Fatalf("gina got %q", got)
	}
	_, err = c.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "gina", Payload: text("other"), IdempotencyKey: "order-17"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("reuse with another request via c = %v; want FAILED_PRECONDITION", err)
	}

	// Concurrent: the same new key through every node at once.
	req = &presencev1.SendToUidRequest{Uid: "gina", Payload: text("race"), IdempotencyKey: "order-18"}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ids  = map[string]int{}
		dups int
	)
	for i := range 9 {
		wg.Go(func() {
			r, err := nodes[i%3].backend.SendToUid(ctx, req)
			if err != nil {
				t.Errorf("concurrent SendToUid: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[r.GetPushId()]++
			if r.GetDuplicate() {
				dups++
			}
		})
	}
	wg.Wait()
	if len(ids) != 1 || dups != 8 {
		t.Fatalf("9 concurrent calls gave push ids %v and %d duplicates; want one id, 8 duplicates", ids, dups)
	}
	if got := gina.push(t); got != "race" {
		t.Fatalf("gina got %q", got)
	}
	select {
	case f := <-gina.frames:
		t.Fatalf("gina got a second frame %v; the key should deliver once", f)
	case <-time.After(200 * time.Millisecond):
	}

	// Broadcast keys too.
	breq := &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Data{Data: structpb.NewStringValue("all")}, IdempotencyKey: "news-1"}
	b1, err := a.backend.Broadcast(ctx, breq)
	if err != nil || b1.GetDuplicate() {
		t.Fatalf("broadcast = %v, %v", b1, err)
	}
	b2, err := c.backend.Broadcast(ctx, breq)
	if err != nil || !b2.GetDuplicate() || b2.GetPushId() != b1.GetPushId() {
		t.Fatalf("broadcast retry via c = %v, %v; want duplicate of %v", b2, err, b1)
	}
}

// TestClusterNeedsJetStream proves a node refuses to start on a NATS
// without JetStream, saying how to fix it, and starts with
// NoJetStream (keys and stored pushes per node).
func TestClusterNeedsJetStream(t *testing.T) {
	ns := startNATSWith(t, 0, false)
	cfg := nodeConfig(ns.ClientURL(), "a")
	if d, err := daemon.Start(cfg); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Shutdown(ctx)
		t.Fatal("a node started on a NATS without JetStream")
	} else if !strings.Contains(err.Error(), "nats-server with -js") {
		t.Fatalf("error %q does not say how to fix it", err)
	}
	n := startNode(t, ns.ClientURL(), "a", func(c *daemon.Config) { c.Cluster.NoJetStream = true })
	if n.c.Shared() != nil {
		t.Fatal("NoJetStream node has a shared store")
	}
	resp, err := n.backend.SendToUid(context.Background(), &presencev1.SendToUidRequest{Uid: "hal", Payload: text("x"), StoreFor: durationpb.New(time.Minute)})
	if err != nil || !resp.GetStored() || resp.GetSeq() != 1 {
		t.Fatalf("store without JetStream = %v, %v; want stored here with seq 1", resp, err)
	}
}
