package server

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// benchSizes are the registry sizes the benchmarks run at.
var benchSizes = []int{10_000, 100_000}

// quietOptions are options for benchmarks that build sessions by hand:
// the background reaper never fires during a run, however long setup takes.
func quietOptions() Options {
	o := fastOptions()
	o.HeartbeatInterval, o.HeartbeatTimeout, o.ReapInterval = time.Hour, 3*time.Hour, time.Hour
	return o
}

// newBenchRegistry returns a registry holding n sessions, one uid each,
// with the server's default presence settings (watch events are built for
// no watcher; a uid going offline arms its grace timer).
func newBenchRegistry(n int) (*registry, []*session) {
	r := newRegistry(newPresence(DefaultPresenceGrace, DefaultLastSeenMax))
	now := time.Now()
	ss := make([]*session, n)
	for i := range ss {
		ss[i] = &session{id: newID(), uid: "u" + strconv.Itoa(i), connectedAt: now}
		r.add(ss[i], DefaultMaxSessionsPerUid, ReplaceOldest, nil)
	}
	return r, ss
}

// TestRegistryCounts proves the kept per-shard counts, and the sessions
// appendAll and each see, match a walk of the uid entries through adds,
// replacements, refusals and removals.
func TestRegistryCounts(t *testing.T) {
	r := newRegistry(newPresence(-1, 10))
	defer r.events.stop()
	walk := func() (uids, sessions int) {
		inEntries := map[*session]bool{}
		for i := range r.shards {
			for _, e := range r.shards[i].uids {
				for _, s := range e.sessions {
					inEntries[s] = true
				}
			}
		}
		all := r.appendAll(nil)
		var each int
		r.each(func(s *session) {
			each++
			if !inEntries[s] {
				t.Fatalf("each visits session %s of %s, which no uid entry holds", s.id, s.uid)
			}
		})
		if len(all) != len(inEntries) || each != len(inEntries) {
			t.Fatalf("appendAll has %d sessions, each visits %d; the uid entries hold %d", len(all), each, len(inEntries))
		}
		for _, s := range all {
			if !inEntries[s] {
				t.Fatalf("appendAll returns session %s of %s, which no uid entry holds", s.id, s.uid)
			}
		}
		return len(r.uidsAfter(nil, "")), len(inEntries)
	}
	var live []*session
	for i := range 200 {
		s := &session{id: newID(), uid: "u" + strconv.Itoa(i%7), connectedAt: time.Now()}
		policy := ReplaceOldest
		if i%3 == 0 {
			policy = RefuseNewest
		}
		max := 4
		if i%2 == 0 {
			max = 1 // replacing a uid's only session
		}
		if _, _, refused := r.add(s, max, policy, nil); !refused {
			live = append(live, s)
		}
		if i%5 == 0 && len(live) > 0 { // some go, including ones already replaced
			r.remove(live[0])
			live = live[1:]
		}
		gu, gs := r.counts()
		if wu, ws := walk(); gu != wu || gs != ws {
			t.Fatalf("after op %d: counts() = %d uids, %d sessions; a walk finds %d, %d", i, gu, gs, wu, ws)
		}
	}
	for _, s := range live {
		r.remove(s)
	}
	if u, n := r.counts(); u != 0 || n != 0 {
		t.Fatalf("counts() after removing all = %d, %d; want 0, 0", u, n)
	}
}

// BenchmarkRegistry measures the registry operations on the session path
// (register and unregister a session), on the unicast path (find a uid's
// sessions under its shard lock), and the whole-registry passes (counts
// for GetCounts and /metrics, the copy a broadcast makes).
func BenchmarkRegistry(b *testing.B) {
	for _, n := range benchSizes {
		r, ss := newBenchRegistry(n)
		b.Run(fmt.Sprintf("add_remove/n=%d", n), func(b *testing.B) {
			// A pool of uids that come and go, each back within the
			// presence grace period (as reconnecting clients are).
			extra := make([]*session, 1024)
			for i := range extra {
				extra[i] = &session{id: newID(), uid: "x" + strconv.Itoa(i), connectedAt: time.Now()}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s := extra[i%len(extra)]
				i++
				r.add(s, DefaultMaxSessionsPerUid, ReplaceOldest, nil)
				r.remove(s)
			}
		})
		b.Run(fmt.Sprintf("lookup/n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			found := 0
			for b.Loop() {
				r.withUid(ss[(i*7919)%n].uid, false, func(e *uidEntry) {
					if e != nil {
						found++
					}
				})
				i++
			}
			if found != i {
				b.Fatalf("found %d of %d uids", found, i)
			}
		})
		b.Run(fmt.Sprintf("counts/n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, got := r.counts(); got != n {
					b.Fatalf("counts() sessions = %d; want %d", got, n)
				}
			}
		})
		b.Run(fmt.Sprintf("append_all/n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			dst := make([]*session, 0, n)
			for b.Loop() {
				dst = r.appendAll(dst[:0])
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/session")
		})
		r.events.stop()
	}
}
