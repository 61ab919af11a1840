//go:build !linux

package main

import "time"

// preciseWaiter has no timerfd here: a Go timer, then a spin long enough
// to cover the timer's lateness (see precise_linux.go).
type preciseWaiter struct{}

func newPreciseWaiter() *preciseWaiter { return &preciseWaiter{} }

func (*preciseWaiter) wait(t time.Time, done <-chan struct{}) bool {
	return waitSpin(t, 1500*time.Microsecond, done)
}

func (*preciseWaiter) hasTimerfd() bool { return false }

func (*preciseWaiter) close() {}
