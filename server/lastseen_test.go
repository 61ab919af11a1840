package server

import (
	"fmt"
	"testing"
	"time"
)

func TestLastSeen(t *testing.T) {
	l := newLastSeen(3)
	t0 := time.Unix(1000, 0)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	want := func(uid string, ok bool, when time.Time) {
		t.Helper()
		got, found := l.get(uid)
		if found != ok || (ok && !got.Equal(when)) {
			t.Fatalf("get(%s) = %v, %v; want %v, %v", uid, got, found, when, ok)
		}
	}
	l.set("a", at(1))
	l.set("b", at(2))
	l.set("c", at(3))
	want("a", true, at(1))
	want("c", true, at(3))

	// Coming online forgets the time; the entry is not offline any more.
	l.online("b")
	want("b", false, time.Time{})
	l.set("d", at(4)) // three offline: a, c, d
	want("a", true, at(1))

	// A fourth offline uid pushes out the one offline longest (a), not an
	// online one's kept entry.
	l.set("e", at(5))
	want("a", false, time.Time{})
	want("c", true, at(3))

	// b goes offline again: newest; c is now the oldest and goes next.
	l.set("b", at(6))
	want("b", true, at(6))
	want("c", false, time.Time{})
	want("d", true, at(4))
	if l.n != 3 {
		t.Fatalf("%d offline uids remembered, want 3", l.n)
	}

	// Setting a remembered uid again moves it to the newest.
	l.set("d", at(7))
	l.set("f", at(8)) // pushes out e (at 5), the oldest now
	want("e", false, time.Time{})
	want("d", true, at(7))
	want("b", true, at(6))
	if len(l.byUid) != 3 {
		t.Fatalf("%d entries kept, want 3 (b, d, f)", len(l.byUid))
	}
}

// TestLastSeenCycleAllocatesNothing: a uid's online/offline cycles reuse
// its entry.
func TestLastSeenCycleAllocatesNothing(t *testing.T) {
	l := newLastSeen(100)
	uids := make([]string, 50)
	for i := range uids {
		uids[i] = fmt.Sprint("u", i)
		l.set(uids[i], time.Unix(int64(i), 0))
	}
	now := time.Unix(5000, 0)
	allocs := testing.AllocsPerRun(100, func() {
		for _, u := range uids {
			l.online(u)
			l.set(u, now)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round of 50 cycles, want 0", allocs)
	}
}
