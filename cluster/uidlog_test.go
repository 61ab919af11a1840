package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestUidResumeOnAnotherNode proves a client resumes its uid's pushes on
// another node: it got a push on A, left; pushes went on to the uid's
// other session (on B); it reconnects to C and is RESUMED with the pushes
// it missed replayed, in order.
func TestUidResumeOnAnotherNode(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	x, y := connect(t, a, "lee"), connect(t, b, "lee")
	eventually(t, "c sees both sessions", func() bool { return onlineOn(c, "lee", 2) })
	if r, err := c.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "lee", Payload: text("one")}); err != nil || r.GetDelivered() != 2 {
		t.Fatalf("one = %v, %v; want delivered 2", r, err)
	}
	p := x.pushes(t, 1)[0]
	y.pushes(t, 1)
	x.close()
	eventually(t, "c sees one session", func() bool { return onlineOn(c, "lee", 1) })
	for _, s := range []string{"two", "three"} {
		if r, err := a.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "lee", Payload: text(s)}); err != nil || r.GetDelivered() != 1 {
			t.Fatalf("%s = %v, %v; want delivered 1", s, r, err)
		}
	}
	got := y.pushes(t, 2)
	back := resumeOn(t, c, "lee", &presencev1.ResumeFrom{UidEpoch: p.GetEpoch(), UidSeq: p.GetSeq()})
	id := back.ident
	if id.GetUidResume() != presencev1.ResumeResult_RESUME_RESULT_RESUMED || id.GetReplayed() != 2 || id.GetUidSeq() != got[1].GetSeq() {
		t.Fatalf("Identified on c = %v; want uid RESUMED, 2 replayed, at seq %d", id, got[1].GetSeq())
	}
	for i, want := range []string{"two", "three"} {
		r := back.c.pushes(t, 1)[0]
		if r.GetData().GetStringValue() != want || !r.GetReplay() || r.GetSeq() != got[i].GetSeq() {
			t.Fatalf("replayed %v; want %q (seq %d) flagged replay", r, want, got[i].GetSeq())
		}
	}
	// And live pushes follow, to both sessions, once b has heard of the
	// session on c (the client's Identified can arrive before c's
	// announcement reaches b).
	eventually(t, "b sees both sessions", func() bool { return onlineOn(b, "lee", 2) })
	if r, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "lee", Payload: text("four")}); err != nil || r.GetDelivered() != 2 {
		t.Fatalf("four = %v, %v; want delivered 2", r, err)
	}
	for _, cl := range []*client{y, back.c} {
		if s := cl.push(t); s != "four" {
			t.Fatalf("got %q; want four", s)
		}
	}
}

// TestUidPushesInOneOrder proves pushes to one uid through three nodes at
// once reach its sessions on every node in one order: the uid's log's.
func TestUidPushesInOneOrder(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	var cs []*client
	for _, n := range nodes {
		cs = append(cs, connect(t, n, "max"))
	}
	eventually(t, "every node sees 3 sessions", func() bool {
		return onlineOn(nodes[0], "max", 3) && onlineOn(nodes[1], "max", 3) && onlineOn(nodes[2], "max", 3)
	})
	const per = 15
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			for j := range per {
				r, err := n.backend.SendToUid(context.Background(), &presencev1.SendToUidRequest{Uid: "max", Payload: text(fmt.Sprintf("%d-%d", i, j))})
				if err != nil || r.GetDelivered() != 3 {
					t.Errorf("SendToUid via node %d = %v, %v; want delivered 3", i, r, err)
				}
			}
		})
	}
	wg.Wait()
	var first []string
	for i, c := range cs {
		var ids []string
		var last uint64
		for _, p := range c.pushes(t, 3*per) {
			if p.GetSeq() <= last {
				t.Fatalf("session %d: seq %d after %d", i, p.GetSeq(), last)
			}
			last = p.GetSeq()
			ids = append(ids, p.GetId())
		}
		if i == 0 {
			first = ids
		} else if !slices.Equal(ids, first) {
			t.Fatalf("session %d saw the uid's pushes in another order than session 0", i)
		}
	}
}

// TestUidResumeLostPastHistory proves a resume across pushes the log no
// longer keeps (--history-size) is LOST, on any node.
func TestUidResumeLostPastHistory(t *testing.T) {
	_, nodes := startClusterWith(t, func(c *daemon.Config) { c.Server.HistorySize = 3 }, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	x, y := connect(t, a, "ned"), connect(t, b, "ned")
	eventually(t, "c sees both", func() bool { return onlineOn(c, "ned", 2) })
	if _, err := c.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "ned", Payload: text("one")}); err != nil {
		t.Fatal(err)
	}
	p := x.pushes(t, 1)[0]
	x.close()
	eventually(t, "c sees one session", func() bool { return onlineOn(c, "ned", 1) })
	for i := range 5 {
		if _, err := c.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "ned", Payload: text(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	last := y.pushes(t, 6)[5]
	back := resumeOn(t, c, "ned", &presencev1.ResumeFrom{UidEpoch: p.GetEpoch(), UidSeq: p.GetSeq()})
	if back.ident.GetUidResume() != presencev1.ResumeResult_RESUME_RESULT_LOST || back.ident.GetUidSeq() != last.GetSeq() {
		t.Fatalf("Identified = %v; want LOST, at seq %d", back.ident, last.GetSeq())
	}
}

// TestUidGapIsFilled proves a node fills a gap in a uid's log order: an
// entry logged but routed nowhere (its sender died between the two)
// reaches the uid's sessions before the next push.
func TestUidGapIsFilled(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	x := connect(t, b, "oli")
	eventually(t, "a sees oli", func() bool { return onlineOn(a, "oli", 1) })
	orphan := &presencev1.Push{Id: "orphan", Scope: presencev1.PushScope_PUSH_SCOPE_UID, Payload: &presencev1.Push_Data{Data: structpb.NewStringValue("orphan")}}
	if _, _, err := a.c.Shared().AppendUid(context.Background(), "oli", orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := a.backend.SendToUid(context.Background(), &presencev1.SendToUidRequest{Uid: "oli", Payload: text("next")}); err != nil {
		t.Fatal(err)
	}
	ps := x.pushes(t, 2)
	if ps[0].GetData().GetStringValue() != "orphan" || ps[1].GetData().GetStringValue() != "next" || ps[0].GetSeq() >= ps[1].GetSeq() {
		t.Fatalf("got %v then %v; want orphan then next", ps[0], ps[1])
	}
}

// TestUidCatchUpAfterJoin proves the recheck after a uid's first session
// on a node: an entry logged for the uid but routed nowhere (a node
// pushing before it heard of the session) reaches the session about a
// heartbeat after it identified, with no other push to show the gap.
func TestUidCatchUpAfterJoin(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	x := connect(t, b, "pat")
	late := &presencev1.Push{Id: "late", Scope: presencev1.PushScope_PUSH_SCOPE_UID, Payload: &presencev1.Push_Data{Data: structpb.NewStringValue("late")}}
	if _, _, err := a.c.Shared().AppendUid(context.Background(), "pat", late); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if p := x.pushes(t, 1)[0]; p.GetId() != "late" {
		t.Fatalf("got %v; want the late push", p)
	}
	if d := time.Since(start); d > 3*heartbeat {
		t.Errorf("took %v; want about a heartbeat (%v)", d, heartbeat)
	}
}

// TestNotFoundIsNotReplayed proves a push to a uid offline everywhere,
// answered NOT_FOUND ("nothing was sent"), does not enter the uid's log:
// a client resuming afterwards is RESUMED with nothing replayed.
func TestNotFoundIsNotReplayed(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	ctx := context.Background()
	x := connect(t, a, "quinn")
	eventually(t, "b sees quinn", func() bool { return onlineOn(b, "quinn", 1) })
	if _, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "quinn", Payload: text("one")}); err != nil {
		t.Fatal(err)
	}
	p := x.pushes(t, 1)[0]
	x.close()
	eventually(t, "b sees quinn offline", func() bool { return onlineOn(b, "quinn", 0) })
	if _, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "quinn", Payload: text("to nobody")}); status.Code(err) != codes.NotFound {
		t.Fatalf("SendToUid to an offline uid = %v; want NotFound", err)
	}
	back := resumeOn(t, b, "quinn", &presencev1.ResumeFrom{UidEpoch: p.GetEpoch(), UidSeq: p.GetSeq()})
	if back.ident.GetUidResume() != presencev1.ResumeResult_RESUME_RESULT_RESUMED || back.ident.GetReplayed() != 0 {
		t.Fatalf("Identified = %v; want RESUMED with nothing replayed", back.ident)
	}
}

// TestUidCatchUpAfterCut proves a node cut off from NATS while a push to
// its uid went out (logged by another node, which told its caller
// UNAVAILABLE) delivers it once back, with no later push to show the gap.
func TestUidCatchUpAfterCut(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	rae := connect(t, b, "rae")
	eventually(t, "a sees rae", func() bool { return onlineOn(a, "rae", 1) })
	time.Sleep(3 * heartbeat) // past b's check of rae's log after her first session
	b.dialer.Cut()
	time.Sleep(50 * time.Millisecond)
	_, err := a.backend.SendToUid(context.Background(), &presencev1.SendToUidRequest{Uid: "rae", Payload: text("while cut")})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("SendToUid with b cut off = %v; want Unavailable", err)
	}
	b.dialer.Restore()
	if got := rae.push(t); got != "while cut" {
		t.Fatalf("rae got %q; want the push logged while b was cut off", got)
	}
}
