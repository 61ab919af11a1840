package server

import (
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// registry maps uids to their live sessions. It is sharded by uid so that
// sessions coming and going on different uids do not contend.
//
// Lock order: shard.mu before session.mu (a unicast queues to a uid's
// sessions while holding its shard lock, so the uid's pushes reach every
// session in seq order). Queueing never blocks; nothing under a shard lock
// touches the network.
type registry struct {
	seed   maphash.Seed
	shards [registryShards]shard
	events *presence // told of every session start and end, under the shard lock
	// cluster, when set, is told every change of a uid's session count,
	// under the shard lock (so in order), before the session events.
	cluster Cluster
}

const registryShards = 64

type shard struct {
	mu   sync.RWMutex
	uids map[string]*uidEntry // guarded by mu
	// Kept by add and remove, so counts and a broadcast need not walk
	// uids. Guarded by mu.
	online int        // entries with at least one session
	all    []*session // every session of every entry, in no order; a session's regIdx is its index
}

// link adds s to sh.all. sh.mu must be held.
func (sh *shard) link(s *session) {
	s.regIdx = len(sh.all)
	sh.all = append(sh.all, s)
}

// unlink takes s out of sh.all, moving the last session into its place.
// sh.mu must be held.
func (sh *shard) unlink(s *session) {
	last := sh.all[len(sh.all)-1]
	sh.all[s.regIdx] = last
	last.regIdx = s.regIdx
	sh.all[len(sh.all)-1] = nil
	sh.all = sh.all[:len(sh.all)-1]
	if len(sh.all) == 0 && cap(sh.all) > 64 {
		sh.all = nil // a shard that emptied gives back a large array
	}
}

// uidEntry is one uid with live sessions or kept pushes. It exists while
// the uid has a live session or its history holds a push; the uid is
// online exactly when it has sessions.
type uidEntry struct {
	// Guarded by the shard's mu.
	sessions []*session
	seq      uint64 // last PUSH_SCOPE_UID sequence number used
	epoch    string // names this run of seq; new each time the entry is made
	hist     pushHistory
}

// gone reports whether the entry can be forgotten.
func (e *uidEntry) gone() bool { return len(e.sessions) == 0 && len(e.hist.items) == 0 }

func newRegistry(events *presence) *registry {
	r := &registry{seed: maphash.MakeSeed(), events: events}
	for i := range r.shards {
		r.shards[i].uids = make(map[string]*uidEntry)
	}
	return r
}

func (r *registry) shard(uid string) *shard {
	return &r.shards[maphash.String(r.seed, uid)%registryShards]
}

// add registers s under its uid, keeping the uid's sessions oldest first,
// and calls joined with the uid's entry under the shard lock (so no push
// to the uid can come between: joined queues Identified and the replay).
// When the uid already has max sessions (in the cluster, with one),
// policy decides: ReplaceOldest registers s and returns the oldest session
// for the caller to end, or elsewhere when the oldest is on another node;
// RefuseNewest does not register s and returns refused.
func (r *registry) add(s *session, max int, policy UidPolicy, joined func(*uidEntry)) (replaced *session, elsewhere, refused bool) {
	sh := r.shard(s.uid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.uids[s.uid]
	if e == nil {
		e = &uidEntry{epoch: newEpoch()}
		sh.uids[s.uid] = e
	}
	var others int
	var othersOldest time.Time
	if r.cluster != nil {
		others, othersOldest = r.cluster.Elsewhere(s.uid)
	}
	if len(e.sessions)+others >= max {
		if policy == RefuseNewest {
			if e.gone() {
				delete(sh.uids, s.uid)
			}
			return nil, false, true
		}
		if len(e.sessions) > 0 && (others == 0 || !e.sessions[0].connectedAt.After(othersOldest)) {
			replaced = e.sessions[0]
			e.sessions = slices.Delete(e.sessions, 0, 1)
			sh.unlink(replaced)
			if len(e.sessions) == 0 {
				sh.online-- // counted again below, as s joins
			}
			r.events.ended(replaced, false, s.connectedAt)
			r.changed(replaced, e, false, s.connectedAt)
		} else {
			elsewhere = true
		}
	}
	if len(e.sessions) == 0 {
		sh.online++
	}
	e.sessions = append(e.sessions, s)
	sh.link(s)
	r.changed(s, e, true, s.connectedAt)
	r.events.started(s, len(e.sessions) == 1)
	if joined != nil {
		joined(e)
	}
	return replaced, elsewhere, false
}

// remove unregisters s; the uid goes when its last session does.
func (r *registry) remove(s *session) {
	sh := r.shard(s.uid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.uids[s.uid]
	if e == nil {
		return
	}
	i := slices.Index(e.sessions, s)
	if i < 0 {
		return // already taken out when a newer session replaced it
	}
	e.sessions = slices.Delete(e.sessions, i, i+1)
	sh.unlink(s)
	if len(e.sessions) == 0 {
		sh.online--
	}
	if e.gone() {
		delete(sh.uids, s.uid)
	}
	now := time.Now()
	r.events.ended(s, len(e.sessions) == 0, now)
	r.changed(s, e, false, now)
}

// changed tells the cluster, if any, that s started or ended; e is its
// uid's entry after the change. Called under the uid's shard lock.
func (r *registry) changed(s *session, e *uidEntry, started bool, at time.Time) {
	if r.cluster == nil {
		return
	}
	c := SessionChange{Uid: s.uid, SessionID: s.id, Started: started, At: at, Sessions: len(e.sessions)}
	if started {
		c.Labels = s.labels
	}
	if len(e.sessions) > 0 {
		c.Since = e.sessions[0].connectedAt
	}
	r.cluster.SessionsChanged(c)
}

// withUid calls f with the uid's entry under the uid's shard lock. When
// the uid has none, create says whether to make one (f gets nil if not);
// an entry f leaves with no session and no history is forgotten. f must
// not block.
func (r *registry) withUid(uid string, create bool, f func(*uidEntry)) {
	sh := r.shard(uid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.uids[uid]
	if e == nil && create {
		e = &uidEntry{epoch: newEpoch()}
		sh.uids[uid] = e
	}
	f(e)
	if e != nil && e.gone() {
		delete(sh.uids, uid)
	}
}

// trimHistories applies the age bound to every uid's history, forgets
// entries left with neither sessions nor history, and returns how many
// stored pushes expired undelivered.
func (r *registry) trimHistories(now time.Time, lim histLimits) (expired int) {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for uid, e := range sh.uids {
			expired += e.hist.trim(now, lim)
			if e.gone() {
				delete(sh.uids, uid)
			}
		}
		sh.mu.Unlock()
	}
	return expired
}

// sessionsOf returns a copy of uid's live sessions.
func (r *registry) sessionsOf(uid string) []*session {
	sh := r.shard(uid)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e := sh.uids[uid]
	if e == nil {
		return nil
	}
	return append([]*session(nil), e.sessions...)
}

// uidsAfter appends the online uids greater than after to dst.
func (r *registry) uidsAfter(dst []string, after string) []string {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for uid, e := range sh.uids {
			if uid > after && len(e.sessions) > 0 {
				dst = append(dst, uid)
			}
		}
		sh.mu.RUnlock()
	}
	return dst
}

// appendAll appends every live session to dst and returns it. It copies
// shard by shard, so it never holds more than one lock at a time, and each
// shard's sessions are one array (shard.all), not a walk of its uids.
func (r *registry) appendAll(dst []*session) []*session {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		dst = append(dst, sh.all...)
		sh.mu.RUnlock()
	}
	return dst
}

// counts returns the number of online uids and live sessions. It reads
// two numbers per shard, so GetCounts and a metrics scrape cost the same
// whatever the number of sessions.
func (r *registry) counts() (uids, sessions int) {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		uids += sh.online
		sessions += len(sh.all)
		sh.mu.RUnlock()
	}
	return uids, sessions
}

// each calls f for every live session, shard by shard under the shard's
// read lock. f must not block or take a shard lock.
func (r *registry) each(f func(*session)) {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for _, s := range sh.all {
			f(s)
		}
		sh.mu.RUnlock()
	}
}
