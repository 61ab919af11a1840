package cluster_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// TestLateNodeLearnsTheCluster proves a node joining a cluster that
// already holds more uids than one snapshot page fetches them all (paged
// snapshot), and that a burst of changes larger than one gossip batch
// reaches it too. The uids are fed to a's cluster directly, as its
// registry would.
func TestLateNodeLearnsTheCluster(t *testing.T) {
	ns := startNATS(t, 0)
	a := startNode(t, ns.ClientURL(), "a")
	const uids = 5000 // two and a half snapshot pages, ten gossip batches
	now := time.Now()
	for i := range uids {
		a.c.SessionsChanged(server.SessionChange{Uid: fmt.Sprintf("u%05d", i), SessionID: "s", Started: true, At: now, Sessions: 1, Since: now})
	}
	b := startNode(t, ns.ClientURL(), "b")
	counts := func(n *node) uint64 {
		r, err := n.backend.GetCounts(context.Background(), &presencev1.GetCountsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetOnlineUids()
	}
	eventually(t, "b counts a's uids", func() bool { return counts(b) == uids })
	for i := range uids {
		a.c.SessionsChanged(server.SessionChange{Uid: fmt.Sprintf("u%05d", i), SessionID: "s", At: now})
	}
	eventually(t, "b sees a's uids gone", func() bool { return counts(b) == 0 })
}

// TestRestartedNodeIsToldApart proves a node restarting under the same
// name is not taken for its past self: the uids the old run held are
// dropped, the new run's are learned.
func TestRestartedNodeIsToldApart(t *testing.T) {
	ns := startNATS(t, 0)
	b := startNode(t, ns.ClientURL(), "b")
	a := startNode(t, ns.ClientURL(), "a")
	connect(t, a, "old")
	eventually(t, "b sees old", func() bool { return onlineOn(b, "old", 1) })
	// The old run dies without goodbye; a new one starts at once, under
	// the same name, before the node timeout.
	a.dialer.Cut()
	a2 := startNode(t, ns.ClientURL(), "a")
	connect(t, a2, "new")
	eventually(t, "b sees new and not old", func() bool { return onlineOn(b, "new", 1) && onlineOn(b, "old", 0) })
}

// TestDirectoriesConverge proves that after sessions churn across three
// nodes (the same uids connecting and leaving on different nodes, quickly)
// every node's directory agrees with the truth: per uid session counts,
// online uids and sessions.
func TestDirectoriesConverge(t *testing.T) {
	// No per-uid limit in the way: no session is replaced.
	_, nodes := startClusterWith(t, func(c *daemon.Config) { c.Server.MaxSessionsPerUid = 1000 }, "a", "b", "c")
	rng := rand.New(rand.NewPCG(1, 2))
	const nuids = 20
	uid := func(i int) string { return fmt.Sprintf("u%02d", i) }
	type open struct {
		c   *client
		uid int
	}
	var live []open
	for range 300 {
		i := rng.IntN(nuids)
		live = append(live, open{connect(t, nodes[rng.IntN(len(nodes))], uid(i)), i})
		if rng.IntN(2) == 0 {
			k := rng.IntN(len(live))
			live[k].c.close()
			live = slices.Delete(live, k, k+1)
		}
	}
	want := make([]uint32, nuids)
	online := 0
	for _, o := range live {
		if want[o.uid] == 0 {
			online++
		}
		want[o.uid]++
	}
	var uids []string
	for i := range nuids {
		uids = append(uids, uid(i))
	}
	for _, n := range nodes {
		eventually(t, n.c.ID()+" agrees with the truth", func() bool {
			r, err := n.backend.BatchGetPresence(context.Background(), &presencev1.BatchGetPresenceRequest{Uids: uids})
			if err != nil {
				return false
			}
			for i, p := range r.GetPresences() {
				if p.GetSessionCount() != want[i] {
					return false
				}
			}
			c, err := n.backend.GetCounts(context.Background(), &presencev1.GetCountsRequest{})
			return err == nil && c.GetOnlineUids() == uint64(online) && c.GetSessions() == uint64(len(live))
		})
	}
}
