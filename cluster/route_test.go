package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestSendToUidAcrossNodes proves a push sent through any node reaches
// every session of the uid on every node, and the answer counts them all:
// a client on A gets a push sent through B (delivered 1), a uid with
// sessions on A and C gets delivered 2 through B, and a uid nowhere is
// NOT_FOUND.
func TestSendToUidAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()

	alice := connect(t, a, "alice")
	eventually(t, "b sees alice", func() bool { return onlineOn(b, "alice", 1) })
	resp, err := b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "alice", Payload: text("hi from b")})
	if err != nil || resp.GetDelivered() != 1 {
		t.Fatalf("SendToUid(alice) via b = %v, %v; want delivered 1", resp, err)
	}
	if got := alice.push(t); got != "hi from b" {
		t.Errorf("alice got %q; want %q", got, "hi from b")
	}

	bobA, bobC := connect(t, a, "bob"), connect(t, c, "bob")
	eventually(t, "a and b see bob's two sessions", func() bool { return onlineOn(a, "bob", 2) && onlineOn(b, "bob", 2) })
	resp, err = b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "bob", Payload: text("to both")})
	if err != nil || resp.GetDelivered() != 2 {
		t.Fatalf("SendToUid(bob) via b = %v, %v; want delivered 2", resp, err)
	}
	for _, cl := range []*client{bobA, bobC} {
		if got := cl.push(t); got != "to both" {
			t.Errorf("bob got %q; want %q", got, "to both")
		}
	}
	// Through a node that holds one of them: the local one and the remote one.
	resp, err = a.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "bob", Payload: text("from a")})
	if err != nil || resp.GetDelivered() != 2 {
		t.Fatalf("SendToUid(bob) via a = %v, %v; want delivered 2", resp, err)
	}
	for _, cl := range []*client{bobA, bobC} {
		if got := cl.push(t); got != "from a" {
			t.Errorf("bob got %q; want %q", got, "from a")
		}
	}

	_, err = b.backend.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "nobody", Payload: text("x")})
	if status.Code(err) != codes.NotFound {
		t.Errorf("SendToUid(nobody) = %v; want NotFound", err)
	}
}

// TestBroadcastReachesEveryNode proves a broadcast through any node
// reaches the sessions of every node and counts them all.
func TestBroadcastReachesEveryNode(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	var clients []*client
	for i, n := range nodes {
		clients = append(clients, connect(t, n, "u"+string(rune('0'+i))))
	}
	for _, n := range nodes {
		eventually(t, "every node counts 3 sessions", func() bool {
			r, err := n.backend.GetCounts(context.Background(), &presencev1.GetCountsRequest{})
			return err == nil && r.GetSessions() == 3
		})
	}
	for _, via := range nodes {
		resp, err := via.backend.Broadcast(context.Background(), &presencev1.BroadcastRequest{
			Payload: &presencev1.BroadcastRequest_Data{Data: structpb.NewStringValue("all")},
		})
		if err != nil || resp.GetDelivered() != 3 {
			t.Fatalf("Broadcast via %s = %v, %v; want delivered 3", via.c.ID(), resp, err)
		}
		for _, cl := range clients {
			if got := cl.push(t); got != "all" {
				t.Errorf("client got %q; want %q", got, "all")
			}
		}
	}
}

// TestKickAcrossNodes proves Kick through one node ends the uid's
// sessions on the others, with Goodbye KICKED.
func TestKickAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, "a", "b")
	a, b := nodes[0], nodes[1]
	alice := connect(t, a, "alice")
	eventually(t, "b sees alice", func() bool { return onlineOn(b, "alice", 1) })
	resp, err := b.backend.Kick(context.Background(), &presencev1.KickRequest{Uid: "alice", Reason: "test"})
	if err != nil || resp.GetKicked() != 1 {
		t.Fatalf("Kick(alice) via b = %v, %v; want kicked 1", resp, err)
	}
	if g := alice.next(t).GetGoodbye(); g.GetReason() != presencev1.GoodbyeReason_GOODBYE_REASON_KICKED {
		t.Errorf("alice got %v; want Goodbye KICKED", g)
	}
	eventually(t, "b sees alice offline", func() bool { return onlineOn(b, "alice", 0) })
}

// TestAcksAcrossNodes proves a push asking for acks, sent through a node
// that holds none of the uid's sessions, reports which sessions on the
// other nodes acked and which did not.
func TestAcksAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	acks, silent := connect(t, a, "alice"), connect(t, c, "alice")
	eventually(t, "b sees alice's two sessions", func() bool { return onlineOn(b, "alice", 2) })
	acked := make(chan error, 1)
	go func() { acked <- acks.ack() }()
	resp, err := b.backend.SendToUid(context.Background(), &presencev1.SendToUidRequest{
		Uid: "alice", Payload: text("ack me"), AckTimeout: durationpb.New(500 * time.Millisecond),
	})
	if err != nil || resp.GetDelivered() != 2 {
		t.Fatalf("SendToUid(alice, ack) via b = %v, %v; want delivered 2", resp, err)
	}
	if err := <-acked; err != nil {
		t.Fatalf("acking: %v", err)
	}
	if !slices.Equal(resp.GetAckedSessions(), []string{acks.id}) || !slices.Equal(resp.GetUnackedSessions(), []string{silent.id}) {
		t.Errorf("acked %v, unacked %v; want [%s], [%s]", resp.GetAckedSessions(), resp.GetUnackedSessions(), acks.id, silent.id)
	}
}

// TestSendToUidsAcrossNodes proves SendToUids through one node reaches
// uids held on every node, with one result per uid in the order asked: 40
// uids spread over three nodes, and one offline.
func TestSendToUidsAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, "a", "b", "c")
	var uids []string
	var clients []*client
	for i := range 40 {
		uid := fmt.Sprint("many-", i)
		uids = append(uids, uid)
		clients = append(clients, connect(t, nodes[i%3], uid))
	}
	eventually(t, "b sees all 40", func() bool {
		r, err := nodes[1].backend.GetCounts(context.Background(), &presencev1.GetCountsRequest{})
		return err == nil && r.GetOnlineUids() >= 40
	})
	uids = append(uids, "many-offline")
	resp, err := nodes[1].backend.SendToUids(context.Background(), &presencev1.SendToUidsRequest{
		Uids: uids, Payload: &presencev1.SendToUidsRequest_Data{Data: structpb.NewStringValue("to all")},
	})
	if err != nil || resp.GetDelivered() != 40 {
		t.Fatalf("SendToUids = %v, %v; want delivered 40", resp, err)
	}
	for i, r := range resp.GetResults() {
		if r.GetUid() != uids[i] {
			t.Fatalf("result %d is for %q; want %q (the order asked)", i, r.GetUid(), uids[i])
		}
		if want := i < 40; r.GetDelivered() == 1 != want || r.GetOffline() == want {
			t.Errorf("result %v; want delivered %v", r, want)
		}
	}
	for _, c := range clients {
		if got := c.push(t); got != "to all" {
			t.Fatalf("got %q", got)
		}
	}
}
