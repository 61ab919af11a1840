package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Cluster lets a Server be one node of several. With Options.Cluster nil
// (the default) the server is a single node and nothing here runs.
//
// The server tells the cluster every change of a uid's local session
// count (SessionsChanged) and asks it for what this node cannot do alone:
// reach sessions on other nodes (SendToUid, Broadcast, Kick, Sessions),
// and the cluster-wide view that presence queries answer from (Presence,
// Counts, OnlineAfter, which include this node). The cluster calls back
// through the Local that Attach gives it; in cluster mode it, not the
// local registry, says when a uid comes online and goes offline for
// WatchPresence (Local.Online, Local.Offline), so a uid moving between
// nodes is debounced like a reconnect on one node.
//
// Lock order: a registry shard's mu, then whatever the cluster locks in
// SessionsChanged, then presence.mu (Local.Online and Local.Offline take
// it). The cluster must not call Local's other methods with its own locks
// held.
type Cluster interface {
	// Attach is called once, by New, before any session exists.
	Attach(local *Local) error
	// SessionsChanged says a session of this node started or ended. Called
	// under the uid's shard lock, in the order the changes happened; it
	// must not block.
	SessionsChanged(c SessionChange)
	// SendToUid queues push to uid's sessions on the other nodes.
	// ackTimeout > 0 waits for their acks as Local.SendToUid does. An
	// error says some node holding the uid could not be reached (the
	// result still counts the others); when this node is cut off from the
	// cluster the error wraps ErrClusterUnreachable even if no other node
	// is known to hold the uid.
	// prev is the uid log's entry before push (see Local.SendToUid).
	SendToUid(ctx context.Context, uid string, push *presencev1.Push, prev uint64, ackTimeout time.Duration) (RemoteDelivery, error)
	// Broadcast queues push on every other node; it returns the sessions
	// reached and an error naming nodes that could not be.
	Broadcast(ctx context.Context, push *presencev1.Push) (uint32, error)
	// Kick ends the uid's sessions (or the one named) on other nodes.
	Kick(ctx context.Context, req *presencev1.KickRequest) (uint32, error)
	// Elsewhere is uid's session count on the other nodes and the oldest
	// of them, from the directory. Called under the uid's shard lock at
	// Identify (the per-uid limit holds across the cluster); must not
	// block.
	Elsewhere(uid string) (sessions int, oldest time.Time)
	// ReplaceOldest ends uid's oldest session on the other nodes with
	// Goodbye REPLACED and msg.
	ReplaceOldest(ctx context.Context, uid, msg string) error
	// Sessions lists the uid's sessions on other nodes.
	Sessions(ctx context.Context, uid string) ([]*presencev1.SessionInfo, error)
	// Presence is uid's cluster-wide session count and oldest session.
	Presence(uid string) (sessions int, since time.Time)
	// Counts is the cluster-wide number of online uids and sessions.
	Counts() (uids, sessions int)
	// OnlineAfter appends the cluster's online uids greater than after.
	OnlineAfter(dst []string, after string) []string
	// Shared is storage every node reaches, for idempotency keys and
	// stored pushes, or nil to keep those per node. Called once, after
	// Attach.
	Shared() Shared
	// Close leaves the cluster (other nodes drop this node's uids at once)
	// and stops everything Attach started. Called by Shutdown and Close.
	Close()
}

// SessionChange is one session starting or ending on this node.
type SessionChange struct {
	Uid       string
	SessionID string
	Labels    map[string]string // of a session that started
	Started   bool              // else ended
	At        time.Time
	// Sessions is the uid's session count on this node after the change,
	// Since its oldest session's start (zero when Sessions is 0).
	Sessions int
	Since    time.Time
}

// ErrClusterUnreachable says this node is cut off from the cluster and
// cannot tell what other nodes hold.
var ErrClusterUnreachable = errors.New("this node is cut off from the cluster (NATS unreachable)")

// RemoteDelivery is what other nodes did with one push to a uid.
type RemoteDelivery struct {
	Delivered uint32
	// Seq and Epoch are one delivering node's numbering of the push (each
	// node numbers a uid's pushes in its own sequence).
	Seq            uint64
	Epoch          string
	Acked, Unacked []string
}

// Local is what a Cluster may ask of this node on behalf of other nodes.
// Every method touches this node's sessions only.
type Local struct{ srv *Server }

// SendToUid queues push to uid's sessions here (no store) and, with
// ackTimeout, waits for their acks. A uid with no session here gets a
// response with Delivered 0. In a cluster that numbers uid pushes in its
// log, push.Seq is its seq there and prev the uid's entry before it.
func (l *Local) SendToUid(ctx context.Context, uid string, push *presencev1.Push, prev uint64, ackTimeout time.Duration) (*presencev1.SendToUidResponse, error) {
	resp, err := l.srv.sendToUidLocal(ctx, uid, push, prev, 0, ackTimeout)
	if status.Code(err) == codes.NotFound {
		return &presencev1.SendToUidResponse{PushId: push.GetId()}, nil
	}
	return resp, err
}

// Broadcast queues push to every session here and returns how many took
// it. With Shared, push is numbered in the cluster's broadcast log and is
// delivered in that order; without, it is numbered in this node's own
// broadcast sequence.
func (l *Local) Broadcast(ctx context.Context, push *presencev1.Push) uint32 {
	if l.srv.shared != nil {
		return l.srv.broadcastNumbered(ctx, push)
	}
	return l.srv.broadcast(push)
}

// Options are the server's options, defaults filled in.
func (l *Local) Options() Options { return l.srv.opts }

// DeliverStored takes uid's stored pushes from the shared store and sends
// them to the uid's sessions on every node, as on Identify: the uid came
// online while they were being stored.
func (l *Local) DeliverStored(ctx context.Context, uid string) error {
	if l.srv.shared == nil {
		return nil
	}
	return l.srv.deliverStored(ctx, uid)
}

// deliverStored takes uid's stored pushes from the shared store and sends
// each like a live push, flagged replay: numbered in the uid's log (a
// cluster with Shared always keeps one) and queued to the uid's sessions
// on every node. A push no session took, or that a node may not have
// got, is stored again for the rest of its time: at least once, as a
// retry of any failed push.
func (srv *Server) deliverStored(ctx context.Context, uid string) error {
	taken, err := srv.shared.TakePushes(ctx, uid)
	for _, sp := range taken {
		sp.Push.Replay = true
		if resp, serr := srv.sendToUidCluster(ctx, uid, sp.Push, 0, 0); serr != nil || resp.GetDelivered() == 0 {
			srv.restore(ctx, uid, sp)
		}
	}
	return err
}

// restore puts a taken stored push back for the rest of its time.
func (srv *Server) restore(ctx context.Context, uid string, sp StoredPush) {
	left := time.Until(sp.Until)
	if left <= 0 {
		srv.storedExpired.Add(1)
		return
	}
	sp.Push.Replay = false
	if err := srv.shared.StorePush(context.WithoutCancel(ctx), uid, sp.Push, left); err != nil {
		srv.log.Warn("a stored push taken for a session that ended at once could not be stored again; it is lost", "uid", uid, "push", sp.Push.GetId(), "err", err)
	}
}

// storeShared keeps a push for a uid offline on every node in the shared
// store, where whichever node the uid connects to takes it. Its seq is
// given when it is delivered.
func (srv *Server) storeShared(ctx context.Context, uid string, push *presencev1.Push, storeFor time.Duration) error {
	err := srv.shared.StorePush(ctx, uid, push, storeFor)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrStoreFull):
		return status.Errorf(codes.ResourceExhausted, "uid %q: %v; nothing was stored", uid, err)
	default:
		return status.Errorf(codes.Unavailable, "uid %q has no live session on any node, and the cluster's push store cannot be reached (%v); nothing was stored", uid, err)
	}
}

// BroadcastSeq is the last broadcast this node delivered, for a cluster
// to compare with other nodes'.
func (l *Local) BroadcastSeq() uint64 {
	l.srv.bcastMu.Lock()
	defer l.srv.bcastMu.Unlock()
	return l.srv.bcastSeq
}

// StartBroadcasts sets where the cluster's broadcast log stands: its
// epoch and last seq. A cluster with Shared calls it in Attach, before
// any request, and again whenever it sees the log anew (after a NATS
// outage): another epoch (the log was lost and made anew) starts the
// sequence over; a later seq means this node missed broadcasts, which
// it fills from the log.
func (l *Local) StartBroadcasts(ctx context.Context, epoch string, last uint64) {
	srv := l.srv
	srv.bcastMu.Lock()
	if epoch != srv.epoch {
		srv.epoch, srv.bcastSeq = epoch, last
		srv.bcastHist.reset(last, srv.hist.budget)
		srv.bcastMu.Unlock()
		return
	}
	from := srv.bcastSeq + 1
	srv.bcastMu.Unlock()
	if last >= from {
		srv.fillBroadcasts(ctx, from, last)
	}
}

// Kick ends uid's sessions here (or the one named) and returns how many.
func (l *Local) Kick(req *presencev1.KickRequest) uint32 { return l.srv.kickLocal(req) }

// ReplaceOldest ends uid's oldest session here with Goodbye REPLACED and
// msg, and reports whether there was one.
func (l *Local) ReplaceOldest(uid, msg string) bool {
	ss := l.srv.reg.sessionsOf(uid)
	if len(ss) == 0 {
		return false
	}
	ss[0].end(&EndError{Reason: ReasonReplaced, Msg: msg})
	return true
}

// Holding is another node's sessions of a uid: how many, and the oldest
// one's start.
type Holding struct {
	Sessions int
	Oldest   time.Time
}

// EnforceLimit ends this node's sessions of uid that the per-uid limit
// leaves out, judged with the other nodes' holdings: two Identifies on two
// nodes at once can both pass the limit, each node seeing only the other
// sessions it had heard of. The rule keeps, by policy, the oldest
// sessions (refuse-newest) or the newest (replace-oldest), as one node
// would have. Each node ends only its own sessions, and only those it is
// sure the rule leaves out (it knows another node's oldest session, not
// all of them), so it never ends one too many.
func (l *Local) EnforceLimit(uid string, others []Holding) {
	srv := l.srv
	max := srv.opts.MaxSessionsPerUid
	ss := srv.reg.sessionsOf(uid) // oldest first
	total := len(ss)
	for _, o := range others {
		total += o.Sessions
	}
	if total <= max {
		return
	}
	for i, s := range ss {
		if total <= max {
			return
		}
		switch srv.opts.SessionsPerUidPolicy {
		case RefuseNewest:
			older := i // this node's sessions before s
			for _, o := range others {
				if o.Oldest.Before(s.connectedAt) {
					older++ // at least one there is older
				}
			}
			if older >= max {
				s.end(endf(ReasonLimit, "uid %q already had %d sessions in the cluster when this one started (another node let one in at the same moment); close one first", uid, max))
				total--
			}
		default: // ReplaceOldest
			newer := len(ss) - i - 1
			for _, o := range others {
				if o.Oldest.After(s.connectedAt) {
					newer += o.Sessions // all of them are newer
				}
			}
			if newer >= max {
				s.end(endf(ReasonReplaced, replacedMsg, uid, max))
				total--
			}
		}
	}
}

// Sessions lists uid's sessions here, oldest first.
func (l *Local) Sessions(uid string) []*presencev1.SessionInfo {
	return sessionInfos(l.srv.reg.sessionsOf(uid))
}

// SessionEvent tells watchers (those asking for session events) that a
// session of uid on another node started or ended.
func (l *Local) SessionEvent(uid, sessionID string, labels map[string]string, started bool, at time.Time) {
	l.srv.pres.sessionEvent(uid, sessionID, labels, started, at)
}

// Online says uid has a session somewhere in the cluster again (since:
// its oldest); watchers see ONLINE unless it is back within the grace
// period.
func (l *Local) Online(uid string, since time.Time) { l.srv.pres.up(uid, since) }

// Offline says uid has no session anywhere in the cluster since at;
// watchers see OFFLINE once the grace period passes without Online.
func (l *Local) Offline(uid string, at time.Time) { l.srv.pres.down(uid, at) }

// sendToUidCluster is SendToUid in cluster mode: this node's sessions and
// the other nodes' at once. It stores the push (here) only when the uid
// is offline in the whole cluster.
func (srv *Server) sendToUidCluster(ctx context.Context, uid string, push *presencev1.Push, storeFor, ackTimeout time.Duration) (*presencev1.SendToUidResponse, error) {
	c := srv.opts.Cluster
	online, _ := c.Presence(uid)
	if online > 0 {
		storeFor = 0 // online somewhere: deliver, never store
	} else if storeFor > 0 && srv.shared != nil {
		if err := srv.storeShared(ctx, uid, push, storeFor); err != nil {
			return nil, err
		}
		return &presencev1.SendToUidResponse{PushId: push.Id, SentAt: push.SentAt, Stored: true}, nil
	}
	var prev uint64
	if online > 0 {
		// Logged only for a uid online somewhere: a push to nobody
		// (NOT_FOUND, nothing sent) must not be replayed later.
		push, prev = srv.logUid(ctx, uid, push)
	}
	type result struct {
		rd  RemoteDelivery
		err error
	}
	remote := make(chan result, 1)
	go func() {
		rd, err := c.SendToUid(ctx, uid, push, prev, ackTimeout)
		remote <- result{rd, err}
	}()
	resp, err := srv.sendToUidLocal(ctx, uid, push, prev, storeFor, ackTimeout)
	r := <-remote
	if err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	if resp == nil {
		resp = &presencev1.SendToUidResponse{PushId: push.Id, SentAt: push.SentAt}
	}
	local := resp.Delivered
	if resp.Delivered == 0 && !resp.Stored {
		resp.Seq, resp.Epoch = r.rd.Seq, r.rd.Epoch
	}
	resp.Delivered += r.rd.Delivered
	resp.AckedSessions = append(resp.AckedSessions, r.rd.Acked...)
	resp.UnackedSessions = append(resp.UnackedSessions, r.rd.Unacked...)
	switch {
	case r.err != nil && errors.Is(r.err, ErrClusterUnreachable) && (local > 0 || resp.Stored):
		// Cut off, but the uid is here: deliver what we can.
	case r.err != nil:
		return nil, status.Errorf(codes.Unavailable, "uid %q: delivered to %d sessions (%d on this node), but %v; a retry delivers again to the sessions already reached",
			uid, resp.Delivered, local, r.err)
	case resp.Delivered == 0 && !resp.Stored:
		return nil, status.Errorf(codes.NotFound, "uid %q has no live session on any node; nothing was sent (set store_for to keep the push until it connects)", uid)
	}
	return resp, nil
}

// broadcastCluster adds the other nodes' sessions to a local broadcast.
func (srv *Server) broadcastCluster(ctx context.Context, push *presencev1.Push, local uint32) (uint32, error) {
	remote, err := srv.opts.Cluster.Broadcast(ctx, push)
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "broadcast reached %d sessions (%d on this node), but %v", local+remote, local, err)
	}
	return local + remote, nil
}

// kickCluster adds the other nodes' kicks to a local one.
func (srv *Server) kickCluster(ctx context.Context, req *presencev1.KickRequest, local uint32) (uint32, error) {
	if req.GetSessionId() != "" && local > 0 {
		return local, nil // session ids are unique: it was here
	}
	remote, err := srv.opts.Cluster.Kick(ctx, req)
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "uid %q: ended %d sessions (%d on this node), but %v", req.GetUid(), local+remote, local, err)
	}
	return local + remote, nil
}

// clusterPresenceOf is presenceOf from the cluster's view; with sessions,
// it asks the nodes holding the uid for theirs.
func (srv *Server) clusterPresenceOf(ctx context.Context, uid string, withSessions bool) (*presencev1.UidPresence, error) {
	p := &presencev1.UidPresence{Uid: uid}
	n, since := srv.opts.Cluster.Presence(uid)
	if n == 0 {
		if at, ok := srv.pres.lastSeenAt(uid); ok {
			p.LastSeen = timestamppb.New(at)
		}
		return p, nil
	}
	p.Online, p.SessionCount, p.ConnectedSince = true, uint32(n), timestamppb.New(since)
	if !withSessions {
		return p, nil
	}
	remote, err := srv.opts.Cluster.Sessions(ctx, uid)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "uid %q is online, but its sessions cannot all be listed: %v; try again", uid, err)
	}
	p.Sessions = append(sessionInfos(srv.reg.sessionsOf(uid)), remote...)
	slices.SortStableFunc(p.Sessions, func(a, b *presencev1.SessionInfo) int {
		return cmp.Compare(a.GetConnectedAt().AsTime().UnixNano(), b.GetConnectedAt().AsTime().UnixNano())
	})
	return p, nil
}

// onlineAfter appends the online uids greater than after: this node's,
// or the cluster's.
func (srv *Server) onlineAfter(dst []string, after string) []string {
	if c := srv.opts.Cluster; c != nil {
		return c.OnlineAfter(dst, after)
	}
	return srv.reg.uidsAfter(dst, after)
}

// onlineCounts is the number of online uids and sessions: this node's, or
// the cluster's.
func (srv *Server) onlineCounts() (uids, sessions int) {
	if c := srv.opts.Cluster; c != nil {
		return c.Counts()
	}
	return srv.reg.counts()
}

// pushToUidCluster is pushToUid in cluster mode, for SendToUids: this
// node's sessions, then the other nodes'. A node that could not be
// reached is an UNAVAILABLE error beside the result.
func (srv *Server) pushToUidCluster(ctx context.Context, push *presencev1.Push, uid string, storeFor time.Duration) (uidDelivery, error) {
	c := srv.opts.Cluster
	online, _ := c.Presence(uid)
	if online > 0 {
		storeFor = 0
	} else if storeFor > 0 && srv.shared != nil {
		r := uidDelivery{UidDelivery: &presencev1.UidDelivery{Uid: uid}}
		if err := srv.storeShared(ctx, uid, push, storeFor); err != nil {
			return r, err
		}
		r.Stored = true
		return r, nil
	}
	var prev uint64
	if online > 0 {
		push, prev = srv.logUid(ctx, uid, push) // as in sendToUidCluster
	}
	r, err := srv.deliverHere(ctx, push, uid, prev, storeFor)
	if err != nil {
		return r, err
	}
	rd, rerr := c.SendToUid(ctx, uid, push, prev, 0)
	local := r.Delivered
	if local == 0 && !r.Stored {
		r.Seq, r.Epoch = rd.Seq, rd.Epoch
	}
	r.Delivered += rd.Delivered
	r.Offline = r.Delivered == 0 && !r.Stored
	if rerr != nil && !(errors.Is(rerr, ErrClusterUnreachable) && (local > 0 || r.Stored)) {
		return r, status.Errorf(codes.Unavailable, "uid %q: %v", uid, rerr)
	}
	return r, nil
}

// logUid numbers a copy of push in uid's log, when the cluster keeps one,
// and returns it with the uid's entry before it. A push the log cannot
// take (NATS away) goes out with seq 0: delivered, never replayed.
func (srv *Server) logUid(ctx context.Context, uid string, push *presencev1.Push) (*presencev1.Push, uint64) {
	epoch := srv.uidLogEpoch()
	if epoch == "" {
		return push, 0
	}
	p := pushCopy(push)
	seq, prev, err := srv.shared.AppendUid(ctx, uid, p)
	if err != nil {
		srv.log.Debug("the uid log cannot take a push; it goes out unnumbered", "uid", uid, "err", err)
		return p, 0
	}
	p.Seq, p.Epoch = seq, epoch
	return p, prev
}

// replacedMsg is the Goodbye message of a session a newer one replaced
// (the uid and the limit follow).
const replacedMsg = "a newer session of uid %q replaced this one (the limit is %d sessions per uid); do not reconnect automatically"

// replaceElsewhere ends the uid's oldest session, which is on another
// node: a new session here took the uid past its limit.
func (srv *Server) replaceElsewhere(ctx context.Context, uid string) {
	msg := fmt.Sprintf(replacedMsg, uid, srv.opts.MaxSessionsPerUid)
	if err := srv.opts.Cluster.ReplaceOldest(ctx, uid, msg); err != nil {
		srv.log.Warn("could not replace the uid's oldest session on another node; the uid is over its session limit until one ends", "uid", uid, "err", err)
	}
}
