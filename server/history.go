package server

import (
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// pushHistory is the recent pushes of one sequence (one uid's, or the
// broadcasts'), oldest first. It serves resume (a client that reconnects
// gets what it missed) and stored pushes (kept for a uid with no live
// session). It is guarded by its owner's lock: the uid's shard lock, or
// Server.bcastMu for broadcasts.
//
// Invariant: every seq greater than lost and at most the sequence's last
// seq is in items. So a client at position p can be resumed exactly when
// p >= lost; dropping an item or declining to keep a push raises lost.
// Items at or below lost stay only while they are stored pushes waiting
// for delivery (delivery of those needs no position).
type pushHistory struct {
	items   []*histItem
	lost    uint64
	waiting int // stored pushes among items not yet delivered
}

// histItem is one kept push.
type histItem struct {
	push *presencev1.Push // as sent live; never modified
	size int              // bytes charged to the shared budget
	at   time.Time        // when it was accepted
	// storeUntil is set while a stored push waits for the uid's next
	// session; zero once delivered (or for a push that was sent live).
	storeUntil time.Time
	replay     *Frame // the push with Push.replay set, built on first replay
}

// histItemOverhead is what one kept push costs besides its encoded size:
// the item, its slot, the Push struct and its Frame (measured with
// BenchmarkHistoryMemory). It is charged to the budget so that the budget
// bounds real memory.
const histItemOverhead = 320

// histBudget bounds the bytes kept by every history of a server together.
type histBudget struct {
	used atomic.Int64
	max  int64
}

func (b *histBudget) take(n int) bool {
	if b.used.Add(int64(n)) > b.max {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

func (b *histBudget) give(n int) { b.used.Add(-int64(n)) }

// histLimits are the bounds a history keeps to.
type histLimits struct {
	size   int           // pushes per sequence
	age    time.Duration // a push older than this goes (unless stored and waiting)
	budget *histBudget
}

// errHistoryFull says a stored push could not be kept.
type errHistoryFull struct{ why string }

func (e errHistoryFull) Error() string { return e.why }

// add keeps push (already numbered) unless the bounds refuse it; then it
// raises lost to push's seq, so a resume across it is reported as lost, not
// hidden. A stored push (storeUntil set) is never dropped that way: add
// returns an error and keeps nothing, so the caller can refuse the request.
func (h *pushHistory) add(push *presencev1.Push, size int, now, storeUntil time.Time, lim histLimits) (expired int, err error) {
	expired = h.trim(now, lim)
	cost := size + histItemOverhead
	stored := !storeUntil.IsZero()
	if lim.size <= 0 {
		if stored {
			return expired, errHistoryFull{"this server keeps no push history (--history-size 0), so it cannot store pushes"}
		}
		h.lost = push.GetSeq()
		return expired, nil
	}
	if len(h.items) >= lim.size {
		// Make room by forgetting the oldest push that is not waiting.
		if h.waiting == 0 {
			h.dropFront(lim.budget) // the common case, in O(1)
		} else if i := slices.IndexFunc(h.items, func(it *histItem) bool { return it.storeUntil.IsZero() }); i >= 0 {
			oldest := h.items[i]
			h.drop(lim.budget, func(it *histItem) bool { return it == oldest })
		} else if stored {
			return expired, errHistoryFull{"the uid already has " + strconv.Itoa(lim.size) + " stored pushes waiting, the most it may; wait for it to connect"}
		}
	}
	if len(h.items) >= lim.size || !lim.budget.take(cost) {
		if stored {
			return expired, errHistoryFull{"the server's push history is full (--history-max-bytes); try again later"}
		}
		h.lost = push.GetSeq()
		h.drop(lim.budget, func(*histItem) bool { return false }) // what no resume can use now
		return expired, nil
	}
	h.items = append(h.items, &histItem{push: push, size: cost, at: now, storeUntil: storeUntil})
	if stored {
		h.waiting++
	}
	return expired, nil
}

// dropFront forgets the oldest item, which is not waiting.
func (h *pushHistory) dropFront(b *histBudget) {
	it := h.items[0]
	h.items[0] = nil
	h.items = h.items[1:]
	h.lost = max(h.lost, it.push.GetSeq())
	b.give(it.size)
	if len(h.items) == 0 {
		h.items = nil // let the backing array go
	}
}

// drop forgets the items gone reports, raising lost past them, and with
// them the older items that are not waiting (no resume can use them now).
func (h *pushHistory) drop(b *histBudget, gone func(*histItem) bool) {
	for _, it := range h.items {
		if gone(it) {
			h.lost = max(h.lost, it.push.GetSeq())
		}
	}
	kept := h.items[:0]
	for _, it := range h.items {
		if gone(it) || (it.storeUntil.IsZero() && it.push.GetSeq() <= h.lost) {
			b.give(it.size)
			if !it.storeUntil.IsZero() {
				h.waiting--
			}
			continue
		}
		kept = append(kept, it)
	}
	clear(h.items[len(kept):])
	h.items = kept
	if len(h.items) == 0 {
		h.items = nil // let the backing array go
	}
}

// trim forgets the pushes older than the age bound and the stored pushes
// whose time passed; it returns how many of those expired undelivered.
func (h *pushHistory) trim(now time.Time, lim histLimits) (expired int) {
	if h.waiting == 0 {
		// Only pushes sent live: the old ones are at the front.
		for len(h.items) > 0 && now.Sub(h.items[0].at) >= lim.age {
			h.dropFront(lim.budget)
		}
		return 0
	}
	gone := func(it *histItem) bool {
		if !it.storeUntil.IsZero() {
			return !now.Before(it.storeUntil)
		}
		return now.Sub(it.at) >= lim.age
	}
	any := false
	for _, it := range h.items {
		if gone(it) {
			any = true
			if !it.storeUntil.IsZero() {
				expired++
			}
		}
	}
	if any {
		h.drop(lim.budget, gone)
	}
	return expired
}

// covers reports whether every push after position pos (up to last, the
// sequence's last seq) is kept.
func (h *pushHistory) covers(pos, last uint64) bool {
	return pos <= last && pos >= h.lost
}

// replayFrames returns the frames for every item after pos, or for only
// the stored pushes still waiting when all is false, and marks stored
// pushes delivered.
func (h *pushHistory) replayFrames(dst []*Frame, pos uint64, all bool) []*Frame {
	for _, it := range h.items {
		if it.push.GetSeq() <= pos || (!all && it.storeUntil.IsZero()) {
			continue
		}
		if !it.storeUntil.IsZero() {
			it.storeUntil = time.Time{}
			h.waiting--
		}
		if it.replay == nil {
			p := proto.CloneOf(it.push)
			p.Replay = true
			it.replay = pushFrame(p)
		}
		dst = append(dst, it.replay)
	}
	return dst
}

// skip says the pushes up to seq will never be kept (they were missed for
// good): a resume across them is LOST.
func (h *pushHistory) skip(seq uint64, b *histBudget) {
	h.lost = max(h.lost, seq)
	h.drop(b, func(*histItem) bool { return false })
}

// reset forgets everything: the sequence starts over after seq (another
// epoch).
func (h *pushHistory) reset(seq uint64, b *histBudget) {
	h.drop(b, func(*histItem) bool { return true })
	h.lost = seq
}
