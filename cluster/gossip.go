package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// onGossip applies another node's gossip, in the order that node sent it.
// A node first heard of, a node that restarted, a gap in a node's changes
// or a heartbeat ahead of what was applied makes this node fetch that
// node's snapshot (resync) before going on; changes are absolute, so the
// events queued meanwhile apply cleanly on top of it.
func (n *Node) onGossip(m *nats.Msg) {
	var g gossip
	if err := json.Unmarshal(m.Data, &g); err != nil || g.Node == "" {
		return
	}
	if g.Node == n.id { // NoEcho: never our own
		if g.Kind == kindHeartbeat && g.Hello {
			n.log.Error("another node runs under this node's name; give every node its own --nats-name", "their_incarnation", g.Inc)
		}
		return
	}
	if g.Kind == kindHeartbeat && g.Hello {
		select {
		case n.hbNow <- struct{}{}:
		default:
		}
	}
	if g.Kind == kindHeartbeat && g.Bcast > 0 {
		n.behind(g.Bcast)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	if g.Kind == kindBye {
		if p := n.peers[g.Node]; p != nil && p.inc == g.Inc {
			n.dropPeerLocked(g.Node, "said goodbye")
		}
		n.mu.Unlock()
		return
	}
	var over []string // uids a session elsewhere took past the limit
	defer func() {
		for _, uid := range over {
			n.enforceLimit(uid)
		}
	}()
	p := n.peers[g.Node]
	if p != nil && p.inc != g.Inc {
		n.dropPeerLocked(g.Node, "restarted")
		p = nil
	}
	if p == nil {
		p = &peer{id: g.Node, inc: g.Inc, uids: make(map[string]struct{})}
		n.peers[g.Node] = p
		n.log.Info("node joined the cluster", "peer", g.Node)
	}
	p.heard = time.Now()
	need := !p.synced
	if p.synced {
		switch g.Kind {
		case kindEvents:
			last := g.Seq + uint64(len(g.Changes)) - 1
			switch {
			case last <= p.seq: // already applied (a snapshot covered it)
			case g.Seq > p.seq+1:
				need = true // a gap: some changes were lost
			default:
				for _, c := range g.Changes {
					n.applyLocked(p.id, c)
					if c.Ev == evStarted {
						if k, _ := n.dir.presence(c.Uid); k > n.maxPerUid {
							over = append(over, c.Uid)
						}
					}
				}
				p.seq = last
			}
		case kindHeartbeat:
			need = g.Seq > p.seq
		}
	}
	if need && time.Since(p.tried) < n.cfg.Heartbeat {
		// A fetch just failed: wait for a heartbeat before the next, so
		// a node that cannot answer does not stall everyone's gossip.
		need = false
	}
	if need {
		p.tried = time.Now()
	}
	n.mu.Unlock()
	if need {
		n.resync(g.Node, g.Inc)
	}
}

// resync fetches a node's snapshot, page by page, and replaces what this
// node knew of it. It runs on the gossip goroutine, so that node's later
// changes wait and then apply on top.
func (n *Node) resync(id, inc string) {
	n.mu.Lock()
	n.resyncing = true
	n.mu.Unlock()
	start := time.Now()
	entries, seq, err := n.fetchSnapshot(id, inc)
	took := time.Since(start)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.resyncing = false
	// Gossip waited while we fetched: do not count that against anyone.
	for _, p := range n.peers {
		p.heard = p.heard.Add(took)
	}
	p := n.peers[id]
	if n.closed || p == nil || p.inc != inc {
		return
	}
	if err != nil {
		n.log.Warn("cannot fetch a node's snapshot; will retry at its next heartbeat", "peer", id, "err", err)
		return
	}
	had := p.uids
	p.uids = make(map[string]struct{}, len(entries))
	for _, c := range entries {
		delete(had, c.Uid)
		n.applyLocked(id, c)
	}
	for uid := range had {
		n.applyLocked(id, change{Uid: uid})
	}
	p.seq, p.synced = seq, true
}

// fetchSnapshot asks node id for its uids, page by page. seq is the
// node's seq at the first page: every change after it is still to come
// as gossip, and applies on top (changes are absolute).
func (n *Node) fetchSnapshot(id, inc string) (entries []change, seq uint64, err error) {
	req := snapReq{Limit: snapshotPage}
	for page := 0; ; page++ {
		var r reply
		if err := n.request(n.ctx, id, opSnapshot, req, n.cfg.RequestTimeout, &r); err != nil {
			return nil, 0, err
		}
		if r.Inc != inc {
			return nil, 0, fmt.Errorf("node %s restarted meanwhile", id)
		}
		if page == 0 {
			seq = r.Seq
		}
		entries = append(entries, r.Entries...)
		if !r.More || len(r.Entries) == 0 {
			return entries, seq, nil
		}
		req.After = r.Entries[len(r.Entries)-1].Uid
	}
}

// snapshot serves one page of this node's uids.
func (n *Node) snapshot(req snapReq) reply {
	limit := req.Limit
	if limit <= 0 || limit > snapshotPage {
		limit = snapshotPage
	}
	n.mu.Lock()
	r := reply{Inc: n.inc, Seq: n.seq}
	for uid, c := range n.mine {
		if uid > req.After {
			r.Entries = append(r.Entries, c)
		}
	}
	n.mu.Unlock()
	slices.SortFunc(r.Entries, func(a, b change) int {
		if a.Uid < b.Uid {
			return -1
		}
		if a.Uid > b.Uid {
			return 1
		}
		return 0
	})
	if len(r.Entries) > limit {
		r.Entries, r.More = r.Entries[:limit], true
	}
	return r
}

// request sends one request to node id and decodes its reply into r. A
// reply with Err set is an error.
func (n *Node) request(ctx context.Context, id, op string, body any, timeout time.Duration, r *reply) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg := nats.NewMsg(n.subject(id, op))
	msg.Data = b
	deadline, _ := ctx.Deadline()
	msg.Header.Set(hdrDeadline, strconv.FormatInt(deadline.UnixNano(), 10))
	m, err := n.nc.RequestMsgWithContext(ctx, msg)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("node %s does not answer (gone from NATS)", id)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("node %s did not answer within %v", id, timeout)
	case err != nil:
		return fmt.Errorf("node %s: %w", id, err)
	}
	if err := json.Unmarshal(m.Data, r); err != nil {
		return fmt.Errorf("node %s: bad reply: %w", id, err)
	}
	if r.Err != "" {
		return fmt.Errorf("node %s: %s", id, r.Err)
	}
	return nil
}
