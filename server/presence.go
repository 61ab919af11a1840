package server

import (
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
	p.lastSeen.online(uid)
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

// lastSeen remembers when uids went offline, bounded: past max offline
// uids the longest offline are forgotten (a query then reports last_seen
// unset). A uid's entry is allocated once and reused: coming online
// unlinks it from the order and keeps it for the uid's next disconnect,
// so connect/disconnect cycles allocate nothing here, and the entries
// that outlive a burst of sessions are not scattered among the sessions'
// freed memory. Entries exist for the uids offline (at most max) and for
// online uids that were offline before (one per online uid at most).
type lastSeen struct {
	max        int
	n          int        // linked entries: the offline uids remembered
	head, tail *seenEntry // linked, oldest first
	byUid      map[string]*seenEntry
}

type seenEntry struct {
	uid        string
	at         time.Time
	prev, next *seenEntry
	linked     bool // offline: in the order, with a time
}

func newLastSeen(max int) *lastSeen {
	return &lastSeen{max: max, byUid: make(map[string]*seenEntry)}
}

// set records that uid went offline at at.
func (l *lastSeen) set(uid string, at time.Time) {
	e := l.byUid[uid]
	if e == nil {
		e = &seenEntry{uid: uid}
		l.byUid[uid] = e
	}
	l.unlink(e)
	e.at = at
	e.linked = true
	e.prev, e.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
	l.n++
	for l.n > l.max {
		old := l.head
		l.unlink(old)
		delete(l.byUid, old.uid)
	}
}

func (l *lastSeen) get(uid string) (time.Time, bool) {
	if e := l.byUid[uid]; e != nil && e.linked {
		return e.at, true
	}
	return time.Time{}, false
}

// online forgets uid's last-seen time; its entry waits for the next set.
func (l *lastSeen) online(uid string) {
	if e := l.byUid[uid]; e != nil {
		l.unlink(e)
	}
}

func (l *lastSeen) unlink(e *seenEntry) {
	if !e.linked {
		return
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next, e.linked = nil, nil, false
	l.n--
}
