package server

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// BenchmarkBroadcastHistory is the cost of keeping broadcasts for resume
// on the fan-out: one broadcast queued to 1,000 in-process sessions, with
// the history on (the default) and off (--history-size -1), in one run.
//
//	go test ./server -run '^$' -bench BroadcastHistory -count 6
func BenchmarkBroadcastHistory(b *testing.B) {
	for _, size := range []int{-1, DefaultHistorySize} {
		name := "history=on"
		if size < 0 {
			name = "history=off"
		}
		b.Run(name, func(b *testing.B) {
			o := fastOptions()
			o.HistorySize = size
			srv, err := New(o)
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			var sessions []*session
			for i := range 1000 {
				s := newTestSession(srv, fmt.Sprint("u", i))
				srv.reg.add(s, 10, ReplaceOldest, nil)
				sessions = append(sessions, s)
			}
			data := structpb.NewStringValue("a broadcast of about a hundred bytes, which is what a typical notification carries.")
			b.ReportAllocs()
			for b.Loop() {
				p, _ := srv.newPush(data, nil)
				p.Scope = presencev1.PushScope_PUSH_SCOPE_BROADCAST
				if n := srv.broadcast(p); n != 1000 {
					b.Fatalf("delivered %d", n)
				}
			}
			b.StopTimer()
			for _, s := range sessions {
				s.end(&EndError{Reason: ReasonShutdown})
				s.finish(&EndError{Reason: ReasonShutdown})
			}
		})
	}
}

// BenchmarkStoredPushMemory measures the heap a stored push costs: 10,000
// pushes with a 100-byte payload stored for 10,000 offline uids (each
// with its own registry entry) or 64 for each of 156 uids, against what
// the history budget charges for them.
//
//	go test ./server -run '^$' -bench StoredPushMemory -count 6
func BenchmarkStoredPushMemory(b *testing.B) {
	for _, perUid := range []int{1, DefaultHistorySize} {
		b.Run(fmt.Sprintf("per-uid=%d", perUid), func(b *testing.B) {
			const n = 10_000
			data := structpb.NewStringValue(string(make([]byte, 100)))
			var heap, charged float64
			for b.Loop() {
				o := fastOptions()
				srv, err := New(o)
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for i := range n {
					p, _ := srv.newPush(data, nil)
					p.Scope = presencev1.PushScope_PUSH_SCOPE_UID
					if r, err := srv.pushToUid(p, fmt.Sprint("user-", i/perUid), time.Hour); err != nil || !r.Stored {
						b.Fatal(r, err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap += float64(after.HeapAlloc-before.HeapAlloc) / n
				charged += float64(srv.hist.budget.used.Load()) / n
				runtime.KeepAlive(srv)
				srv.Close()
			}
			b.ReportMetric(heap/float64(b.N), "heap-B/push")
			b.ReportMetric(charged/float64(b.N), "charged-B/push")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkHistoryAdd is what keeping one push costs the sender: a full
// history (the default 64 pushes) takes one more and forgets its oldest.
//
//	go test ./server -run '^$' -bench HistoryAdd -count 6
func BenchmarkHistoryAdd(b *testing.B) {
	lim := histLimits{size: DefaultHistorySize, age: time.Hour, budget: &histBudget{max: DefaultHistoryMaxBytes}}
	var h pushHistory
	now := time.Now()
	var seq uint64
	b.ReportAllocs()
	for b.Loop() {
		seq++
		h.add(&presencev1.Push{Seq: seq}, 100, now, time.Time{}, lim)
	}
}
