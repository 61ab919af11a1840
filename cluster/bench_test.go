package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// BenchmarkSendToUid measures one SendToUid round trip from a backend on
// loopback, to a uid whose one session is on the node called (local) or
// on another node (remote: one NATS request more), with the uid log in
// JetStream (the default) and without it (--nats-jetstream=false, each
// node numbering the uid's pushes itself). The client drains its pushes
// as they come.
func BenchmarkSendToUid(b *testing.B) {
	for _, mode := range []struct {
		name        string
		noJetStream bool
	}{{"jetstream", false}, {"core", true}} {
		b.Run(mode.name, func(b *testing.B) {
			// The test client sends no Ping: give it a heartbeat timeout
			// longer than any run (-count 10 takes many seconds).
			_, nodes := startClusterWith(b, func(c *daemon.Config) {
				c.Server.HeartbeatInterval, c.Server.HeartbeatTimeout = time.Minute, time.Hour
				c.Cluster.NoJetStream = mode.noJetStream
			}, "a", "b")
			c := connect(b, nodes[0], "alice")
			go discard(c)
			eventually(b, "b sees alice", func() bool { return onlineOn(nodes[1], "alice", 1) })
			for _, bc := range []struct {
				name string
				via  *node
			}{{"local", nodes[0]}, {"remote", nodes[1]}} {
				b.Run(bc.name, func(b *testing.B) {
					req := &presencev1.SendToUidRequest{Uid: "alice", Payload: text("x")}
					for b.Loop() {
						r, err := bc.via.backend.SendToUid(context.Background(), req)
						if err != nil || r.GetDelivered() != 1 {
							b.Fatalf("SendToUid = %v, %v; want delivered 1", r, err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkSendToUids measures one SendToUids to 200 uids whose sessions
// are spread over two nodes, through one of them.
func BenchmarkSendToUids(b *testing.B) {
	_, nodes := startClusterWith(b, func(c *daemon.Config) {
		c.Server.HeartbeatInterval, c.Server.HeartbeatTimeout = time.Minute, time.Hour
	}, "a", "b")
	var uids []string
	for i := range 200 {
		uid := fmt.Sprint("u", i)
		uids = append(uids, uid)
		go discard(connect(b, nodes[i%2], uid))
	}
	eventually(b, "a sees all", func() bool {
		r, err := nodes[0].backend.GetCounts(context.Background(), &presencev1.GetCountsRequest{})
		return err == nil && r.GetOnlineUids() == 200
	})
	req := &presencev1.SendToUidsRequest{Uids: uids, Payload: &presencev1.SendToUidsRequest_Data{Data: structpb.NewStringValue("x")}}
	for b.Loop() {
		r, err := nodes[0].backend.SendToUids(context.Background(), req)
		if err != nil || r.GetDelivered() != 200 {
			b.Fatalf("SendToUids = %v, %v; want delivered 200", r.GetDelivered(), err)
		}
	}
}

// discard reads and drops c's frames until its stream ends, so a
// benchmark's pushes never wait on a full frames channel.
func discard(c *client) {
	for {
		select {
		case <-c.frames:
		case <-c.done:
			return
		}
	}
}
