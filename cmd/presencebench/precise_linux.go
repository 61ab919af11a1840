//go:build linux

package main

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// preciseWaiter keeps an open loop's schedule to microseconds while
// leaving the bench's one P free for the sessions' sockets.
//
// A Go timer alone can fire up to a millisecond late when the P is idle:
// the P then sleeps in epoll_wait, whose timeout is whole milliseconds.
// Covering that millisecond with a spin (as this tool first did) made the
// bench deaf: while a goroutine spins the scheduler always has something
// to run, so it does not poll the network, and a push or an HTTP response
// that arrived during the spin waited for it to end, up to 1.5 ms of every
// 2 at 500 pushes/s, which the latencies then counted. Here a timerfd,
// armed for the same instant and watched by Go's network poller like any
// socket, ends that epoll_wait on time; the Go timer then fires. Only the
// last spinShort is spun, for the thread's wake-up.
type preciseWaiter struct {
	fd int      // for timerfd_settime and the drain (f.Fd() would make f blocking)
	f  *os.File // registers fd with the poller; nil: no timerfd, a long spin instead
}

const (
	spinShort = 150 * time.Microsecond  // spun with the timerfd's help
	spinLong  = 1500 * time.Microsecond // spun without it
)

func newPreciseWaiter() *preciseWaiter {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return &preciseWaiter{fd: -1}
	}
	// A non-blocking descriptor makes a pollable *os.File: the poller
	// watches it from here on, though nothing ever waits to read it.
	return &preciseWaiter{fd: fd, f: os.NewFile(uintptr(fd), "timerfd")}
}

// wait returns at t, or false as soon as done is closed.
func (w *preciseWaiter) wait(t time.Time, done <-chan struct{}) bool {
	if w.f == nil {
		return waitSpin(t, spinLong, done)
	}
	wake := t.Add(-spinShort)
	if d := time.Until(wake); d > 0 {
		// Drain the last expiry (the poller watches edges), then arm.
		var n [8]byte
		unix.Read(w.fd, n[:])
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(d.Nanoseconds())}
		if unix.TimerfdSettime(w.fd, 0, &spec, nil) != nil {
			return waitSpin(t, spinLong, done)
		}
	}
	return waitSpin(t, spinShort, done)
}

// hasTimerfd reports whether waits end on a timerfd (else on a long spin).
func (w *preciseWaiter) hasTimerfd() bool { return w.f != nil }

func (w *preciseWaiter) close() {
	if w.f != nil {
		w.f.Close()
	}
}
