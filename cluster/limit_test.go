package cluster_test

import (
	"context"
	"fmt"
	"sync"
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

// TestSessionLimitRace proves the per-uid limit settles across nodes when
// Identifies race: with a limit of 1, two sessions of each of 20 uids
// identify at the same moment on a and b (each node may let its own in,
// not yet knowing of the other); within a gossip delay every uid has one
// session in the cluster, the one the policy keeps, and the other ended
// with the policy's Goodbye.
func TestSessionLimitRace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy server.UidPolicy
		end    string // how the session left out ends
	}{
		{"replace-oldest", server.ReplaceOldest, "goodbye GOODBYE_REASON_REPLACED"},
		{"refuse-newest", server.RefuseNewest, "status ResourceExhausted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, nodes := startClusterWith(t, func(c *daemon.Config) {
				c.Server.MaxSessionsPerUid = 1
				c.Server.SessionsPerUidPolicy = tc.policy
			}, "a", "b")
			const uids = 20
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				ends = map[string][]string{}
			)
			for u := range uids {
				uid := fmt.Sprint("r", u)
				for _, n := range nodes {
					wg.Go(func() {
						openRacing(t, n, uid, func(end string) {
							mu.Lock()
							defer mu.Unlock()
							ends[uid] = append(ends[uid], end)
						})
					})
				}
			}
			wg.Wait()
			for u := range uids {
				uid := fmt.Sprint("r", u)
				eventually(t, uid+" has one session in both nodes' view, the other ended", func() bool {
					mu.Lock()
					n := len(ends[uid])
					mu.Unlock()
					return n == 1 && onlineOn(nodes[0], uid, 1) && onlineOn(nodes[1], uid, 1)
				})
				mu.Lock()
				if got := ends[uid][0]; got != tc.end {
					t.Errorf("%s: the session left out ended with %s; want %s", uid, got, tc.end)
				}
				mu.Unlock()
			}
		})
	}
}

// openRacing opens a stream to n as uid and leaves it open until the test
// ends; it may be refused at Identify or ended later, as the limit says,
// and ended is told how (its Goodbye, else its status).
func openRacing(t *testing.T, n *node, uid string, ended func(string)) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := presencev1.NewPresenceServiceClient(n.cc).Connect(ctx)
	if err != nil {
		t.Error(err)
		return
	}
	if err := stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: uid}}}); err != nil {
		t.Error(err)
		return
	}
	go func() {
		for {
			f, err := stream.Recv()
			if err != nil {
				if ctx.Err() == nil {
					ended("status " + status.Code(err).String())
				}
				return
			}
			if g := f.GetGoodbye(); g != nil {
				ended("goodbye " + g.GetReason().String())
				for {
					if _, err := stream.Recv(); err != nil {
						return
					}
				}
			}
		}
	}()
}
