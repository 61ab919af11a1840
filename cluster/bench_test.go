package cluster_test

import (
	"context"
	"testing"
	"time"

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
			go func() {
				for {
					select {
					case <-c.frames:
					case <-c.done:
						return
					}
				}
			}()
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
