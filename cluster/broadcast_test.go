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

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

func bcast(s string) *presencev1.BroadcastRequest {
	return &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Data{Data: structpb.NewStringValue(s)}}
}

// pushes reads n pushes from c.
func (c *client) pushes(t testing.TB, n int) []*presencev1.Push {
	t.Helper()
	var out []*presencev1.Push
	for len(out) < n {
		if p := c.next(t).GetPush(); p != nil {
			out = append(out, p)
		}
	}
	return out
}

// TestBroadcastsInOneOrderOnEveryNode proves broadcasts sent through
// three nodes at once reach every client in one order, numbered in one
// contiguous sequence with one epoch (the cluster's broadcast log).
func TestBroadcastsInOneOrderOnEveryNode(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	var clients []*client
	for i, n := range nodes {
		clients = append(clients, connect(t, n, fmt.Sprint("u", i)))
	}
	const per = 15
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			for j := range per {
				r, err := n.backend.Broadcast(context.Background(), bcast(fmt.Sprintf("%d-%d", i, j)))
				if err != nil || r.GetDelivered() != 3 {
					t.Errorf("Broadcast via node %d = %v, %v; want delivered 3", i, r, err)
				}
			}
		})
	}
	wg.Wait()
	var first []string
	for i, c := range clients {
		ps := c.pushes(t, 3*per)
		var ids []string
		for k, p := range ps {
			ids = append(ids, p.GetId())
			if k > 0 && (p.GetSeq() != ps[k-1].GetSeq()+1 || p.GetEpoch() != ps[0].GetEpoch()) {
				t.Fatalf("client %d: push %d is seq %d epoch %q after seq %d epoch %q; want one contiguous sequence",
					i, k, p.GetSeq(), p.GetEpoch(), ps[k-1].GetSeq(), ps[k-1].GetEpoch())
			}
		}
		if i == 0 {
			first = ids
		} else if !slices.Equal(ids, first) {
			t.Fatalf("client %d saw broadcasts in another order than client 0", i)
		}
	}
}

// TestBroadcastResumeOnAnotherNode proves a client that got broadcasts
// through node A and reconnects to node C resumes there: RESUMED, and the
// broadcasts it missed replayed in order.
func TestBroadcastResumeOnAnotherNode(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	cl := connect(t, a, "ivy")
	if _, err := b.backend.Broadcast(ctx, bcast("one")); err != nil {
		t.Fatal(err)
	}
	p := cl.pushes(t, 1)[0]
	cl.close()
	for _, s := range []string{"two", "three"} {
		if _, err := b.backend.Broadcast(ctx, bcast(s)); err != nil {
			t.Fatal(err)
		}
	}
	id := resumeOn(t, c, "ivy", &presencev1.ResumeFrom{BroadcastEpoch: p.GetEpoch(), BroadcastSeq: p.GetSeq()})
	if id.ident.GetBroadcastResume() != presencev1.ResumeResult_RESUME_RESULT_RESUMED || id.ident.GetReplayed() != 2 {
		t.Fatalf("Identified on c = %v; want broadcasts RESUMED with 2 replayed", id.ident)
	}
	for _, want := range []string{"two", "three"} {
		got := id.c.pushes(t, 1)[0]
		if got.GetData().GetStringValue() != want || !got.GetReplay() {
			t.Fatalf("replayed %v; want %q flagged replay", got, want)
		}
	}
}

type resumed struct {
	c     *client
	ident *presencev1.Identified
}

// resumeOn connects to n as uid with a resume position.
func resumeOn(t *testing.T, n *node, uid string, from *presencev1.ResumeFrom) resumed {
	t.Helper()
	c, id := connectResume(t, n, uid, from)
	return resumed{c: c, ident: id}
}

// TestBroadcastGapIsFilled proves a node fills a gap in the broadcast
// sequence from the log: a broadcast logged but never sent to any node
// (its sender died between the two) reaches every client, in order,
// before the next one.
func TestBroadcastGapIsFilled(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	ca, cb := connect(t, a, "ja"), connect(t, b, "jb")
	orphan := &presencev1.Push{Id: "orphan", Scope: presencev1.PushScope_PUSH_SCOPE_BROADCAST, Payload: &presencev1.Push_Data{Data: structpb.NewStringValue("orphan")}}
	if _, err := a.c.Shared().AppendBroadcast(context.Background(), orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := b.backend.Broadcast(context.Background(), bcast("next")); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*client{ca, cb} {
		ps := cl.pushes(t, 2)
		if ps[0].GetData().GetStringValue() != "orphan" || ps[1].GetData().GetStringValue() != "next" || ps[1].GetSeq() != ps[0].GetSeq()+1 {
			t.Fatalf("got %v then %v; want orphan then next, in sequence", ps[0], ps[1])
		}
	}
}

// TestBroadcastCatchUpAfterCut proves a node cut off from NATS while a
// broadcast went out catches up when it is back: its client gets the
// broadcast it missed, and the sender was told the node was not reached.
func TestBroadcastCatchUpAfterCut(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	cb := connect(t, b, "kim")
	b.dialer.Cut()
	time.Sleep(50 * time.Millisecond)
	_, err := a.backend.Broadcast(context.Background(), bcast("while cut"))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Broadcast with b cut off = %v; want Unavailable (b not reached)", err)
	}
	b.dialer.Restore()
	got := cb.pushes(t, 1)[0]
	if got.GetData().GetStringValue() != "while cut" {
		t.Fatalf("kim got %v; want the broadcast it missed", got)
	}
}
