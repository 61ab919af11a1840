package cluster

import (
	"slices"
	"time"
)

// directory is the cluster-wide view every node keeps: which nodes hold
// which uids, with how many sessions. It is fed by this node's own
// changes (synchronously) and by the other nodes' gossip. Not safe for
// concurrent use: Node.mu guards it.
type directory struct {
	uids     map[string][]holding // online uids; each has at least one holding
	sessions int                  // sum of every holding's n
}

// holding is one node's sessions of one uid.
type holding struct {
	node  string
	n     int
	since time.Time // its oldest session
}

func newDirectory() directory { return directory{uids: make(map[string][]holding)} }

// set records that node holds n sessions of uid (0: none). It returns +1
// when the uid just came online in the cluster, -1 when it just went
// offline, else 0.
func (d *directory) set(node, uid string, n int, since time.Time) int {
	hs := d.uids[uid]
	was := len(hs) > 0
	i := slices.IndexFunc(hs, func(h holding) bool { return h.node == node })
	if i >= 0 {
		d.sessions -= hs[i].n
		if n == 0 {
			hs = slices.Delete(hs, i, i+1)
		} else {
			hs[i] = holding{node, n, since}
		}
	} else if n > 0 {
		hs = append(hs, holding{node, n, since})
	}
	d.sessions += n
	switch {
	case len(hs) == 0:
		delete(d.uids, uid)
		if was {
			return -1
		}
	case !was:
		d.uids[uid] = hs
		return +1
	default:
		d.uids[uid] = hs
	}
	return 0
}

// presence returns uid's sessions in the cluster and its oldest.
func (d *directory) presence(uid string) (n int, since time.Time) {
	for _, h := range d.uids[uid] {
		n += h.n
		if since.IsZero() || h.since.Before(since) {
			since = h.since
		}
	}
	return n, since
}

// nodes appends the nodes other than self holding uid.
func (d *directory) nodes(dst []string, uid, self string) []string {
	for _, h := range d.uids[uid] {
		if h.node != self {
			dst = append(dst, h.node)
		}
	}
	return dst
}

// elsewhere returns uid's sessions on nodes other than self, the oldest
// of them, and the node holding it.
func (d *directory) elsewhere(uid, self string) (n int, oldest time.Time, node string) {
	for _, h := range d.uids[uid] {
		if h.node == self {
			continue
		}
		n += h.n
		if node == "" || h.since.Before(oldest) {
			oldest, node = h.since, h.node
		}
	}
	return n, oldest, node
}
