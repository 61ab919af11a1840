package server

import (
	"container/list"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// presence turns sessions coming and going into debounced uid-level
// events for watchers, and remembers when offline uids were last seen.
//
// Lock order: registry shard.mu, then presence.mu, then a watcher's mu.
// The registry calls started and ended under the uid's shard lock, so the
// events of one uid are in the order its sessions really came and went.
// Nothing here blocks: watchers get events through bounded queues.
type presence struct {
	grace time.Duration
	// external: a Cluster says when uids come and go (up, down), not the
	// local sessions. Set before any session starts.
	external bool

	mu sync.Mutex
	// Guarded by mu.
	seq      uint64                 // last event seq
	pending  map[string]*time.Timer // uids whose OFFLINE waits for the grace period
	announce map[string]bool        // uids watchers were told are online
	lastSeen *lastSeen
	watchers map[*watcher]struct{}
}

func newPresence(grace time.Duration, lastSeenMax int) *presence {
	return &presence{
		grace:    grace,
		pending:  make(map[string]*time.Timer),
		announce: make(map[string]bool),
		lastSeen: newLastSeen(lastSeenMax),
		watchers: make(map[*watcher]struct{}),
	}
}

// started records that s identified; first says it is its uid's only
// session. Called under the uid's shard lock.
func (p *presence) started(s *session, first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if first && !p.external {
		p.upLocked(s.uid, s.connectedAt)
	}
	p.emitLocked(presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_STARTED, s.uid, s.id, s.labels, s.connectedAt)
}

// ended records that s ended; last says its uid has no session left.
// Called under the uid's shard lock.
func (p *presence) ended(s *session, last bool, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.emitLocked(presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_ENDED, s.uid, s.id, nil, now)
	if last && !p.external {
		p.downLocked(s.uid, now)
	}
}

// sessionEvent reports a session of another node (cluster mode).
func (p *presence) sessionEvent(uid, id string, labels map[string]string, started bool, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if started {
		p.emitLocked(presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_STARTED, uid, id, labels, at)
		return
	}
	p.emitLocked(presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_ENDED, uid, id, nil, at)
}

// up says uid has a session again (cluster mode).
func (p *presence) up(uid string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upLocked(uid, at)
}

// down says uid has no session left (cluster mode).
func (p *presence) down(uid string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.downLocked(uid, at)
}

// upLocked: uid has its first session; ONLINE unless back within the
// grace period.
func (p *presence) upLocked(uid string, at time.Time) {
	p.lastSeen.remove(uid)
	if t, ok := p.pending[uid]; ok {
		// Back within the grace period: no OFFLINE, no ONLINE.
		t.Stop()
		delete(p.pending, uid)
	} else if !p.announce[uid] {
		p.announce[uid] = true
		p.emitLocked(presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_ONLINE, uid, "", nil, at)
	}
}

// downLocked: uid's last session ended at now; OFFLINE after the grace
// period unless upLocked comes first.
func (p *presence) downLocked(uid string, now time.Time) {
	p.lastSeen.set(uid, now)
	if p.grace <= 0 {
		p.offlineLocked(uid, now)
		return
	}
	if t, ok := p.pending[uid]; ok {
		t.Stop() // a second down without an up between (cluster mode)
	}
	var t *time.Timer
	t = time.AfterFunc(p.grace, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.pending[uid] == t { // not cancelled by a reconnect meanwhile
			delete(p.pending, uid)
			p.offlineLocked(uid, now)
		}
	})
	p.pending[uid] = t
}

func (p *presence) offlineLocked(uid string, at time.Time) {
	if p.announce[uid] {
		delete(p.announce, uid)
		p.emitLocked(presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_OFFLINE, uid, "", nil, at)
	}
}

// emitLocked numbers an event and offers it to every watcher that wants
// it. With no watcher it only takes the number: nothing is built.
func (p *presence) emitLocked(typ presencev1.PresenceEventType, uid, session string, labels map[string]string, at time.Time) {
	p.seq++
	if len(p.watchers) == 0 {
		return
	}
	ev := &presencev1.WatchPresenceResponse{
		Seq: p.seq, Time: timestamppb.New(at), Type: typ, Uid: uid, SessionId: session, Labels: labels,
	}
	for w := range p.watchers {
		w.offer(ev)
	}
}

// lastSeenAt returns when an offline uid was last seen, if remembered.
func (p *presence) lastSeenAt(uid string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastSeen.get(uid)
}

// stop cancels pending OFFLINE timers (the server is going away).
func (p *presence) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for uid, t := range p.pending {
		t.Stop()
		delete(p.pending, uid)
	}
}

// lastSeen remembers when uids went offline, bounded: past max entries the
// oldest are forgotten (a query then reports last_seen unset).
type lastSeen struct {
	max   int
	order *list.List // of *seenEntry, oldest first
	byUid map[string]*list.Element
}

type seenEntry struct {
	uid string
	at  time.Time
}

func newLastSeen(max int) *lastSeen {
	return &lastSeen{max: max, order: list.New(), byUid: make(map[string]*list.Element)}
}

func (l *lastSeen) set(uid string, at time.Time) {
	if e, ok := l.byUid[uid]; ok {
		l.order.Remove(e)
	}
	l.byUid[uid] = l.order.PushBack(&seenEntry{uid: uid, at: at})
	for l.order.Len() > l.max {
		old := l.order.Remove(l.order.Front()).(*seenEntry)
		delete(l.byUid, old.uid)
	}
}

func (l *lastSeen) get(uid string) (time.Time, bool) {
	if e, ok := l.byUid[uid]; ok {
		return e.Value.(*seenEntry).at, true
	}
	return time.Time{}, false
}

func (l *lastSeen) remove(uid string) {
	if e, ok := l.byUid[uid]; ok {
		l.order.Remove(e)
		delete(l.byUid, uid)
	}
}
