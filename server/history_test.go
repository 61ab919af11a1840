package server

import (
	"math/rand/v2"
	"testing"
	"time"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestHistoryInvariant drives one history with random pushes, stores,
// deliveries and trims, and checks after every step what resume relies
// on: every seq after lost is kept, in order; the budget is exactly what
// the items cost and never past its bound; the count bound holds; and a
// waiting stored push is never dropped before its time.
func TestHistoryInvariant(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		lim := histLimits{size: 1 + rng.IntN(8), age: time.Duration(1+rng.IntN(20)) * time.Second, budget: &histBudget{max: int64(rng.IntN(8000))}}
		var h pushHistory
		var last uint64
		now := time.Unix(1e9, 0)
		waiting := map[uint64]time.Time{}
		for step := range 300 {
			now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			switch op := rng.IntN(10); {
			case op < 6: // a push, live or stored
				var until time.Time
				if rng.IntN(3) == 0 {
					until = now.Add(time.Duration(rng.IntN(10)) * time.Second)
				}
				last++
				p := &presencev1.Push{Seq: last}
				if _, err := h.add(p, rng.IntN(600), now, until, lim); err != nil {
					if until.IsZero() {
						t.Fatalf("seed %d step %d: a live push failed: %v", seed, step, err)
					}
					last-- // refused: nothing carries it
				} else if !until.IsZero() {
					waiting[last] = until
				}
			case op < 8:
				h.trim(now, lim)
			default: // a fresh session takes the waiting pushes
				for _, f := range h.replayFrames(nil, 0, false) {
					delete(waiting, f.Msg.GetPush().GetSeq())
				}
			}
			var cost int64
			inItems := map[uint64]bool{}
			prev := uint64(0)
			for _, it := range h.items {
				if it.push.GetSeq() <= prev {
					t.Fatalf("seed %d step %d: items out of order", seed, step)
				}
				prev = it.push.GetSeq()
				cost += int64(it.size)
				inItems[prev] = true
			}
			for s := h.lost + 1; s <= last; s++ {
				if !inItems[s] {
					t.Fatalf("seed %d step %d: seq %d is after lost %d but not kept", seed, step, s, h.lost)
				}
			}
			nWaiting := 0
			for _, it := range h.items {
				if !it.storeUntil.IsZero() {
					nWaiting++
				}
			}
			if nWaiting != h.waiting {
				t.Fatalf("seed %d step %d: %d waiting, counted %d", seed, step, nWaiting, h.waiting)
			}
			if cost != lim.budget.used.Load() || cost > lim.budget.max || len(h.items) > lim.size {
				t.Fatalf("seed %d step %d: cost %d, budget %d of %d, %d items of %d", seed, step, cost, lim.budget.used.Load(), lim.budget.max, len(h.items), lim.size)
			}
			for s, until := range waiting {
				if now.Before(until) && !inItems[s] {
					t.Fatalf("seed %d step %d: stored push %d dropped before its time", seed, step, s)
				}
				if !now.Before(until) && !inItems[s] {
					delete(waiting, s)
				}
			}
		}
	}
}
