package cluster_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// TestSessionLimitAcrossNodes proves the per-uid session limit holds in
// the cluster, not per node: with a limit of 2 and sessions on a and b, a
// third on c replaces the oldest (on a, Goodbye REPLACED) under
// replace-oldest, and is refused (RESOURCE_EXHAUSTED) under refuse-newest.
func TestSessionLimitAcrossNodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy server.UidPolicy
	}{
		{"replace-oldest", server.ReplaceOldest},
		{"refuse-newest", server.RefuseNewest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, nodes := startClusterWith(t, func(c *daemon.Config) {
				c.Server.MaxSessionsPerUid = 2
				c.Server.SessionsPerUidPolicy = tc.policy
			}, "a", "b", "c")
			a, b, c := nodes[0], nodes[1], nodes[2]
			oldest := connect(t, a, "alice")
			time.Sleep(time.Millisecond) // connected_at orders them
			connect(t, b, "alice")
			eventually(t, "c sees alice's two sessions", func() bool { return onlineOn(c, "alice", 2) })

			if tc.policy == server.RefuseNewest {
				if err := identifyErr(t, c, "alice"); status.Code(err) != codes.ResourceExhausted {
					t.Fatalf("third session on c = %v; want ResourceExhausted", err)
				}
				return
			}
			connect(t, c, "alice")
			if g := oldest.next(t).GetGoodbye(); g.GetReason() != presencev1.GoodbyeReason_GOODBYE_REASON_REPLACED {
				t.Fatalf("oldest session on a got %v; want Goodbye REPLACED", g)
			}
			eventually(t, "b counts alice's two sessions", func() bool { return onlineOn(b, "alice", 2) })
		})
	}
}

// identifyErr opens a stream to n, identifies as uid, and returns how the
// stream ended (nil if it was identified).
func identifyErr(t *testing.T, n *node, uid string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := presencev1.NewPresenceServiceClient(n.cc).Connect(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: uid}}}); err != nil {
		return err
	}
	for {
		f, err := stream.Recv()
		if err != nil {
			return err
		}
		if f.GetIdentified() != nil {
			return nil
		}
	}
}
