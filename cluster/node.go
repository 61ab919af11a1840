package cluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/presence-dev/presence/server"
)

// Node is this process's membership of a cluster: it implements
// server.Cluster over NATS.
//
// Goroutines: the loop (publishes this node's changes and heartbeats,
// sweeps silent nodes), the NATS callbacks for gossip (one goroutine,
// messages in order) and for requests (which hand each request to a
// goroutine of its own, at most maxHandlers at once). Close stops and
// waits for all of them.
//
// Lock order: a server registry shard lock (SessionsChanged is called
// under it), then mu, then the server's presence lock (Local.Online and
// Local.Offline). Nothing is sent on the network under mu, and no other
// Local method is called under it.
type Node struct {
	cfg    Config
	id     string // cfg.Name
	inc    string // this run's incarnation
	nc     *nats.Conn
	log    *slog.Logger
	gossip string // the gossip subject
	local  *server.Local

	ctx    context.Context // done when Close starts; ends request handlers
	cancel context.CancelFunc
	stop   chan struct{} // closed by Close: the loop returns
	wake   chan struct{} // one slot: changes wait in the outbox
	hbNow  chan struct{} // one slot: send a heartbeat now (someone said hello)
	loop   sync.WaitGroup
	work   sync.WaitGroup // request handlers
	slots  chan struct{}  // bounds request handlers

	mu sync.Mutex
	// Guarded by mu.
	attached  bool
	closed    bool
	seq       uint64            // this node's last change
	mine      map[string]change // this node's uids, for snapshots
	outbox    []change          // changes not yet published; the last has seq
	dir       directory
	peers     map[string]*peer
	subs      []*nats.Subscription
	resyncing bool // a snapshot is being fetched: do not sweep meanwhile
	// recent are the uids this node stored pushes for, and when: a uid
	// that came online on a node whose gossip had not yet arrived may
	// have looked for stored pushes before the store; one heartbeat later
	// this node checks and delivers them (see recheck).
	recent map[string]time.Time
	// joined are the uids whose first session here started, and when: a
	// node pushing to the uid just then may not yet have known to route
	// here, so a heartbeat later this node reads the uid's log for pushes
	// it missed (see recheck).
	joined map[string]time.Time

	shared     *shared // JetStream storage; nil with NoJetStream
	maxPerUid  int     // the server's per-uid session limit
	catchingUp atomic.Bool
}

// peer is another node as this one knows it. Guarded by Node.mu.
type peer struct {
	id, inc string
	seq     uint64 // its last change applied here
	synced  bool   // a snapshot was applied; seq means something
	heard   time.Time
	tried   time.Time           // last snapshot fetch started; at most one a heartbeat
	uids    map[string]struct{} // the uids it holds, to drop if it dies
}

const (
	maxOutbox    = 100_000 // changes waiting; past it they are dropped and peers resync
	maxBatch     = 500     // changes per gossip message
	snapshotPage = 2000    // uids per snapshot page (well under NATS's 1 MB)
	maxHandlers  = 1024    // requests served at once; more are refused
	catchUpRate  = 2000    // uids a second checked against their logs after a reconnect
)

var _ server.Cluster = (*Node)(nil)

// New connects to NATS. The node joins the cluster when a server attaches
// it (server.Options.Cluster); Close leaves and disconnects.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	cfg = cfg.withDefaults()
	n := &Node{
		cfg:    cfg,
		id:     cfg.Name,
		inc:    rand.Text()[:12],
		log:    cfg.Logger.With("node", cfg.Name),
		gossip: cfg.Prefix + ".gossip",
		stop:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
		hbNow:  make(chan struct{}, 1),
		slots:  make(chan struct{}, maxHandlers),
		mine:   make(map[string]change),
		dir:    newDirectory(),
		peers:  make(map[string]*peer),
		recent: make(map[string]time.Time),
		joined: make(map[string]time.Time),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	nc, err := nats.Connect(cfg.URL, cfg.natsOptions(n)...)
	if err != nil {
		n.cancel()
		return nil, fmt.Errorf("cluster: connecting to NATS at %s: %w", cfg.URL, err)
	}
	n.nc = nc
	return n, nil
}

// ID is this node's name.
func (n *Node) ID() string { return n.id }

// Peers returns the other nodes this one knows, sorted.
func (n *Node) Peers() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ids []string
	for id := range n.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Attach implements server.Cluster: it subscribes, says hello, and starts
// the loop.
func (n *Node) Attach(local *server.Local) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.attached || n.closed {
		return fmt.Errorf("cluster node %s: attached twice or closed", n.id)
	}
	n.local = local
	n.maxPerUid = local.Options().MaxSessionsPerUid
	if !n.cfg.NoJetStream {
		js, err := jetstream.New(n.nc)
		if err != nil {
			return fmt.Errorf("JetStream: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*n.cfg.RequestTimeout)
		defer cancel()
		sh, err := openShared(ctx, js, n.cfg, local.Options())
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("NATS has no JetStream, where this cluster keeps idempotency keys and stored pushes: start nats-server with -js (or give the account JetStream), or keep them per node with --nats-jetstream=false: %w", err)
		}
		if err != nil {
			return fmt.Errorf("setting up JetStream: %w", err)
		}
		sh.stored = n.noteStored
		n.shared = sh
		epoch, last, err := sh.bcastLog(ctx)
		if err != nil {
			return fmt.Errorf("reading the broadcast log: %w", err)
		}
		local.StartBroadcasts(ctx, epoch, last)
		uidEpoch, err := sh.uidLogEpoch(ctx)
		if err != nil {
			return fmt.Errorf("reading the uid log: %w", err)
		}
		local.StartUidLog(uidEpoch)
	}
	g, err := n.nc.Subscribe(n.gossip, n.onGossip)
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", n.gossip, err)
	}
	// Pending limits: gossip may burst while a snapshot is fetched.
	g.SetPendingLimits(1<<20, 256<<20)
	r, err := n.nc.Subscribe(n.subject(n.id, "*"), n.onRequest)
	if err != nil {
		g.Unsubscribe()
		return fmt.Errorf("subscribing to requests: %w", err)
	}
	n.subs = []*nats.Subscription{g, r}
	if err := n.nc.Flush(); err != nil {
		g.Unsubscribe()
		r.Unsubscribe()
		return fmt.Errorf("NATS: %w", err)
	}
	n.attached = true
	n.loop.Add(1)
	go n.run()
	n.log.Info("joined the presence cluster", "nats", n.nc.ConnectedUrlRedacted(), "prefix", n.cfg.Prefix)
	return nil
}

// subject is the subject of op on node id.
func (n *Node) subject(id, op string) string { return n.cfg.Prefix + ".node." + id + "." + op }

// SessionsChanged implements server.Cluster: record, apply to the
// directory at once (so this node's queries see its own sessions), and
// leave the change in the outbox for the loop to publish.
func (n *Node) SessionsChanged(sc server.SessionChange) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	c := change{Uid: sc.Uid, N: sc.Sessions}
	if c.N > 0 {
		c.Since = sc.Since.UnixNano()
		n.mine[c.Uid] = c
		if sc.Started && c.N == 1 && n.shared != nil {
			n.joined[c.Uid] = sc.At
		}
	} else {
		delete(n.mine, c.Uid)
	}
	c.Ev, c.Session, c.Labels, c.At = evEnded, sc.SessionID, sc.Labels, sc.At.UnixNano()
	if sc.Started {
		c.Ev = evStarted
	}
	n.seq++
	if len(n.outbox) >= maxOutbox {
		// NATS has been gone a while. Peers see the gap in our next
		// heartbeat and fetch a snapshot instead.
		n.outbox = nil
	}
	n.outbox = append(n.outbox, c)
	n.applyLocked(n.id, c)
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// applyLocked applies one change of node to the directory and tells the
// server when a uid comes online or goes offline in the cluster, and of
// another node's session events (ONLINE before the first session's
// start, OFFLINE after the last one's end, as on one node).
func (n *Node) applyLocked(node string, c change) {
	remote := node != n.id
	if remote {
		p := n.peers[node]
		if c.N > 0 {
			p.uids[c.Uid] = struct{}{}
		} else {
			delete(p.uids, c.Uid)
		}
	}
	if remote && c.Ev == evEnded {
		n.local.SessionEvent(c.Uid, c.Session, nil, false, time.Unix(0, c.At))
	}
	var since time.Time
	if c.N > 0 {
		since = time.Unix(0, c.Since)
	}
	switch n.dir.set(node, c.Uid, c.N, since) {
	case +1:
		_, first := n.dir.presence(c.Uid)
		n.local.Online(c.Uid, first)
	case -1:
		at := time.Now()
		if c.At != 0 {
			at = time.Unix(0, c.At)
		}
		n.local.Offline(c.Uid, at)
	}
	if remote && c.Ev == evStarted {
		n.local.SessionEvent(c.Uid, c.Session, c.Labels, true, time.Unix(0, c.At))
	}
}

// dropPeerLocked forgets a node and every uid it held.
func (n *Node) dropPeerLocked(id, why string) {
	p := n.peers[id]
	if p == nil {
		return
	}
	for uid := range p.uids {
		n.applyLocked(id, change{Uid: uid})
	}
	delete(n.peers, id)
	n.log.Info("node left the cluster", "peer", id, "why", why, "uids", len(p.uids))
}

// run publishes the outbox when woken, and every heartbeat publishes a
// heartbeat (after the changes it covers, so a peer never sees a seq
// before its events) and sweeps nodes gone silent.
func (n *Node) run() {
	defer n.loop.Done()
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	n.heartbeat(true)
	for {
		select {
		case <-n.wake:
			n.flush()
		case <-n.hbNow:
			n.flush()
			n.heartbeat(false)
		case <-t.C:
			n.flush()
			n.heartbeat(false)
			n.sweep()
			n.recheck()
		case <-n.stop:
			return
		}
	}
}

// flush publishes the outbox. A change that cannot be published is lost
// here; peers notice the gap at the next heartbeat and fetch a snapshot.
func (n *Node) flush() {
	n.mu.Lock()
	batch := n.outbox
	n.outbox = nil
	first := n.seq - uint64(len(batch)) + 1
	n.mu.Unlock()
	for len(batch) > 0 {
		k := min(len(batch), maxBatch)
		n.publish(gossip{Kind: kindEvents, Seq: first, Changes: batch[:k]})
		first += uint64(k)
		batch = batch[k:]
	}
}

// heartbeat publishes this node's last seq; hello asks everyone for
// theirs.
func (n *Node) heartbeat(hello bool) {
	n.mu.Lock()
	seq := n.seq
	n.mu.Unlock()
	g := gossip{Kind: kindHeartbeat, Seq: seq, Hello: hello}
	if n.shared != nil {
		g.Bcast = n.local.BroadcastSeq()
	}
	n.publish(g)
}

func (n *Node) publish(g gossip) {
	g.Node, g.Inc = n.id, n.inc
	b, err := json.Marshal(g)
	if err == nil {
		err = n.nc.Publish(n.gossip, b)
	}
	if err != nil {
		n.log.Debug("gossip not published; peers will resync", "kind", g.Kind, "err", err)
	}
}

// sweep drops nodes silent for longer than the node timeout, unless this
// node is itself cut off (then it cannot tell who is dead: it keeps its
// last view until NATS is back).
func (n *Node) sweep() {
	if !n.nc.IsConnected() {
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.resyncing || n.closed {
		return
	}
	for id, p := range n.peers {
		if now.Sub(p.heard) > n.cfg.NodeTimeout {
			n.dropPeerLocked(id, fmt.Sprintf("no heartbeat for %v", now.Sub(p.heard).Round(time.Millisecond)))
		}
	}
}

// enforceLimit settles a uid that a session on another node took past
// the per-uid limit: two Identifies on two nodes within the gossip delay
// can both pass it. Every node applies the same rule to the same view and
// ends only its own sessions, the ones the policy leaves out (see
// Local.EnforceLimit).
func (n *Node) enforceLimit(uid string) {
	n.mu.Lock()
	var others []server.Holding
	for _, h := range n.dir.uids[uid] {
		if h.node != n.id {
			others = append(others, server.Holding{Sessions: h.n, Oldest: h.since})
		}
	}
	n.mu.Unlock()
	n.local.EnforceLimit(uid, others)
}

// Shared implements server.Cluster.
func (n *Node) Shared() server.Shared {
	if n.shared == nil {
		return nil
	}
	return n.shared
}

// catchUp reads where the broadcast log stands and fills what this node
// missed (after NATS was away, or when another node's heartbeat shows a
// later broadcast).
func (n *Node) catchUp(ctx context.Context) {
	if epoch, err := n.shared.uidLogEpoch(ctx); err == nil {
		n.local.StartUidLog(epoch) // another epoch if the log was made anew
	}
	epoch, last, err := n.shared.bcastLog(ctx)
	if err != nil {
		n.log.Warn("cannot read the broadcast log; missed broadcasts are filled at the next one", "err", err)
		return
	}
	n.local.StartBroadcasts(ctx, epoch, last)
}

// behind is called with another node's last broadcast: if it is later
// than this node's, one catch-up runs (at most one at a time).
func (n *Node) behind(theirs uint64) {
	if n.shared == nil || theirs <= n.local.BroadcastSeq() || !n.catchingUp.CompareAndSwap(false, true) {
		return
	}
	if !n.spawn(func() {
		defer n.catchingUp.Store(false)
		ctx, cancel := context.WithTimeout(n.ctx, 2*n.cfg.RequestTimeout)
		defer cancel()
		n.catchUp(ctx)
	}) {
		n.catchingUp.Store(false)
	}
}

// spawn runs f on a goroutine that Close waits for, unless the node is
// closing; it reports whether f was started.
func (n *Node) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.work.Add(1)
	go func() {
		defer n.work.Done()
		f()
	}()
	return true
}

// noteStored remembers that a push was stored for uid.
func (n *Node) noteStored(uid string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.recent[uid] = time.Now()
}

// recheck closes two races with a uid coming online. The first is
// with a store:
// a node where the uid identified takes its stored pushes at Identify,
// but the node that stored a push may have decided the uid was offline
// before that node's gossip arrived, and stored it after the Identify
// looked. So a heartbeat after a store, if the directory now shows the
// uid online, this node takes the uid's stored pushes and sends them.
// The second is with a push: a node may route a push before it hears of
// the uid's new session here, so a heartbeat after a uid's first session
// here, this node reads the uid's log for what it missed.
func (n *Node) recheck() {
	now := time.Now()
	var due []string
	n.mu.Lock()
	for uid, at := range n.recent {
		if now.Sub(at) < n.cfg.Heartbeat {
			continue
		}
		delete(n.recent, uid)
		if k, _ := n.dir.presence(uid); k > 0 {
			due = append(due, uid)
		}
	}
	var joined []string
	for uid, at := range n.joined {
		if now.Sub(at) < n.cfg.Heartbeat {
			continue
		}
		delete(n.joined, uid)
		if _, ok := n.mine[uid]; ok {
			joined = append(joined, uid)
		}
	}
	n.mu.Unlock()
	if len(due) > 0 {
		n.spawn(func() {
			for _, uid := range due {
				if err := n.local.DeliverStored(n.ctx, uid); err != nil {
					n.log.Warn("could not deliver pushes stored while the uid came online; they wait for its next Identify or their time", "uid", uid, "err", err)
				}
			}
		})
	}
	if len(joined) > 0 {
		n.spawn(func() {
			for _, uid := range joined {
				if err := n.local.CatchUpUid(n.ctx, uid); err != nil {
					n.log.Warn("could not check the uid's log after its first session here; a push routed elsewhere just then comes with the uid's next push", "uid", uid, "err", err)
				}
			}
		})
	}
}

// disconnected and reconnected are NATS's connection callbacks.
func (n *Node) disconnected(_ *nats.Conn, err error) {
	n.log.Warn("cut off from NATS: pushes to other nodes fail (UNAVAILABLE), local delivery goes on", "err", err)
}

func (n *Node) reconnected(nc *nats.Conn) {
	n.mu.Lock()
	now := time.Now()
	for _, p := range n.peers {
		p.heard = now // they had no way to reach us either
	}
	n.mu.Unlock()
	n.log.Info("reconnected to NATS", "nats", nc.ConnectedUrlRedacted())
	select {
	case n.hbNow <- struct{}{}:
	default:
	}
	// Ask everyone for a heartbeat: a gap in theirs makes us resync.
	n.publish(gossip{Kind: kindHeartbeat, Seq: n.lastSeq(), Hello: true})
	// A NATS that restarted without its store has lost the JetStream
	// assets: create them again (a no-op when they are there).
	if n.shared != nil {
		n.spawn(func() {
			ctx, cancel := context.WithTimeout(n.ctx, 2*n.cfg.RequestTimeout)
			defer cancel()
			if err := n.shared.open(ctx); err != nil {
				n.log.Warn("JetStream assets not re-created after reconnecting; idempotency keys, stored pushes and broadcasts fail until they are", "err", err)
				return
			}
			n.catchUp(ctx)
			n.catchUpUids()
		})
	}
}

// catchUpUids reads, for every uid with a session here, the uid's log for
// pushes this node missed while it was cut off (logged by another node,
// which could not route them here and told its caller UNAVAILABLE), and
// delivers them, at most catchUpRate uids a second.
func (n *Node) catchUpUids() {
	n.mu.Lock()
	uids := make([]string, 0, len(n.mine))
	for uid := range n.mine {
		uids = append(uids, uid)
	}
	n.mu.Unlock()
	tick := time.NewTicker(time.Second / catchUpRate)
	defer tick.Stop()
	for _, uid := range uids {
		select {
		case <-tick.C:
		case <-n.ctx.Done():
			return
		}
		if err := n.local.CatchUpUid(n.ctx, uid); err != nil {
			n.log.Debug("uid catch-up after reconnecting", "uid", uid, "err", err)
		}
	}
}

func (n *Node) lastSeq() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.seq
}

// Presence implements server.Cluster.
func (n *Node) Presence(uid string) (int, time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dir.presence(uid)
}

// Counts implements server.Cluster.
func (n *Node) Counts() (uids, sessions int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.dir.uids), n.dir.sessions
}

// OnlineAfter implements server.Cluster.
func (n *Node) OnlineAfter(dst []string, after string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for uid := range n.dir.uids {
		if uid > after {
			dst = append(dst, uid)
		}
	}
	return dst
}

// Close implements server.Cluster: it stops the loop and the request
// handlers, says goodbye (peers drop this node's uids at once instead of
// after the node timeout) and disconnects. Idempotent.
func (n *Node) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	attached := n.attached
	subs := n.subs
	n.mu.Unlock()
	n.cancel()
	for _, s := range subs {
		s.Unsubscribe()
	}
	if attached {
		close(n.stop)
		n.loop.Wait()
	}
	n.work.Wait()
	if attached {
		n.publish(gossip{Kind: kindBye})
		n.nc.FlushTimeout(time.Second)
	}
	n.nc.Close()
}
