package main

import (
	"runtime"
	"testing"
	"time"
)

// TestPreciseWaiter: every wait ends at or after its time, never before,
// and a closed done ends a wait early with false.
func TestPreciseWaiter(t *testing.T) {
	w := newPreciseWaiter()
	defer w.close()
	if runtime.GOOS == "linux" && !w.hasTimerfd() {
		t.Fatal("no timerfd on Linux")
	}
	start := time.Now()
	for k := 1; k <= 20; k++ {
		due := start.Add(time.Duration(k) * 700 * time.Microsecond)
		if !w.wait(due, nil) {
			t.Fatal("wait without done returned false")
		}
		if now := time.Now(); now.Before(due) {
			t.Fatalf("wait %d returned %v early", k, due.Sub(now))
		}
	}
	done := make(chan struct{})
	close(done)
	if w.wait(time.Now().Add(time.Hour), done) {
		t.Fatal("wait with done closed returned true")
	}
}
