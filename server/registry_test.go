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
