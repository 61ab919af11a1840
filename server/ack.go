package server

import (
	"context"
	"slices"
	"sync"
	"time"
)

// ackWaiters are the SendToUid calls waiting for their push to be
// acknowledged, by push id. Without ack_timeout nothing is registered here
// and nothing waits.
type ackWaiters struct {
	mu sync.Mutex
	m  map[string]*ackWait // guarded by mu
}

// ackWait is one push waiting for acks.
type ackWait struct {
	uid string
	// Guarded by ackWaiters.mu.
	want    map[string]bool // sessions it was queued to, not yet acked
	acked   []string        // sessions that acked, in order
	expects bool            // want is final
	done    chan struct{}   // closed once every wanted session acked
}

func (a *ackWaiters) init() { a.m = make(map[string]*ackWait) }

// start registers a wait for push id to uid, before the push is queued so
// no ack can come first.
func (a *ackWaiters) start(id, uid string) *ackWait {
	w := &ackWait{uid: uid, want: make(map[string]bool), done: make(chan struct{})}
	a.mu.Lock()
	a.m[id] = w
	a.mu.Unlock()
	return w
}

// expect sets the sessions the push was queued to.
func (a *ackWaiters) expect(w *ackWait, sessions []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range sessions {
		if !slices.Contains(w.acked, id) {
			w.want[id] = true
		}
	}
	w.expects = true
	w.check()
}

// check closes done when every wanted session acked. a.mu must be held.
func (w *ackWait) check() {
	if w.expects && len(w.want) == 0 {
		select {
		case <-w.done:
		default:
			close(w.done)
		}
	}
}

// ack records that session (of uid) acknowledged push id. Acks for pushes
// nobody waits for (late, repeated, or another uid's) are ignored.
func (a *ackWaiters) ack(id, uid, session string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.m[id]
	if w == nil || w.uid != uid || slices.Contains(w.acked, session) {
		return
	}
	w.acked = append(w.acked, session)
	delete(w.want, session)
	w.check()
}

// wait waits until every session acked, timeout passes or ctx is done,
// then unregisters the wait and returns who acked and who did not.
func (a *ackWaiters) wait(ctx context.Context, id string, w *ackWait, timeout time.Duration) (acked, unacked []string) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	case <-ctx.Done():
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, id)
	for s := range w.want {
		unacked = append(unacked, s)
	}
	slices.Sort(unacked)
	return slices.Clone(w.acked), unacked
}

// cancel unregisters a wait that will not happen.
func (a *ackWaiters) cancel(id string) {
	a.mu.Lock()
	delete(a.m, id)
	a.mu.Unlock()
}
