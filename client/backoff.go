package client

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Backoff says how long the client waits before each reconnect: an
// exponential ceiling with random jitter below it, always within
// [Min, Max].
//
// The n-th retry after a stable session (n counts from 0) draws its delay
// from a window whose top is
//
//	ceiling(n) = min(Max, Min × Multiplier^(n+1))
//
// With FullJitter the window is [Min, ceiling(n)]; with EqualJitter it is
// [max(Min, ceiling(n)/2), ceiling(n)]. With the defaults (500 ms, 30 s, ×2,
// full jitter) the windows are [0.5 s, 1 s], [0.5 s, 2 s], [0.5 s, 4 s], …,
// [0.5 s, 30 s]. A server's Goodbye.reconnect_after hint replaces the drawn
// delay for that one wait.
//
// The zero value is the defaults.
type Backoff struct {
	// Min is the shortest wait and the base of the ceiling. Default 500 ms.
	Min time.Duration
	// Max caps the ceiling. Default 30 s.
	Max time.Duration
	// Multiplier grows the ceiling per retry; at least 1. Default 2.
	Multiplier float64
	// Jitter picks how the delay is drawn below the ceiling. Default
	// FullJitter.
	Jitter Jitter
	// ResetAfter: a session that stayed connected at least this long
	// resets the retry count, so the next reconnect starts again from
	// the first window. Default 10 s.
	ResetAfter time.Duration
}

// Jitter is how a delay is drawn below the backoff ceiling.
type Jitter int

const (
	// FullJitter draws uniformly from [Min, ceiling]: the widest spread,
	// best at keeping many clients from returning together.
	FullJitter Jitter = iota
	// EqualJitter draws uniformly from the upper half of the ceiling (but
	// not below Min): waits grow more predictably, spread a little less.
	EqualJitter
)

// String returns "full" or "equal".
func (j Jitter) String() string {
	switch j {
	case FullJitter:
		return "full"
	case EqualJitter:
		return "equal"
	default:
		return fmt.Sprintf("jitter(%d)", int(j))
	}
}

// Backoff defaults.
const (
	DefaultBackoffMin        = 500 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultBackoffMultiplier = 2.0
	DefaultBackoffResetAfter = 10 * time.Second
)

// withDefaults returns b with every zero field set to its default.
func (b Backoff) withDefaults() Backoff {
	if b.Min == 0 {
		b.Min = DefaultBackoffMin
	}
	if b.Max == 0 {
		b.Max = max(DefaultBackoffMax, b.Min)
	}
	if b.Multiplier == 0 {
		b.Multiplier = DefaultBackoffMultiplier
	}
	if b.ResetAfter == 0 {
		b.ResetAfter = DefaultBackoffResetAfter
	}
	return b
}

// validate reports settings that cannot work, after defaults.
func (b Backoff) validate() error {
	b = b.withDefaults()
	var errs []error
	if b.Min < 0 || b.ResetAfter < 0 {
		errs = append(errs, fmt.Errorf("backoff min %v and reset-after %v must not be negative", b.Min, b.ResetAfter))
	}
	if b.Max < b.Min {
		errs = append(errs, fmt.Errorf("backoff max %v is below min %v", b.Max, b.Min))
	}
	if b.Multiplier < 1 || math.IsNaN(b.Multiplier) || math.IsInf(b.Multiplier, 0) {
		errs = append(errs, fmt.Errorf("backoff multiplier %v must be a finite number of at least 1", b.Multiplier))
	}
	if b.Jitter != FullJitter && b.Jitter != EqualJitter {
		errs = append(errs, fmt.Errorf("backoff jitter %v is neither FullJitter nor EqualJitter", b.Jitter))
	}
	return errors.Join(errs...)
}

// Window returns the range the n-th retry's delay is drawn from (n counts
// from 0; a negative n is 0). Zero fields take their defaults.
func (b Backoff) Window(n int) (lo, hi time.Duration) {
	b = b.withDefaults()
	n = max(n, 0)
	hi = b.Max
	if c := float64(b.Min) * math.Pow(b.Multiplier, float64(n)+1); c < float64(b.Max) {
		hi = max(time.Duration(c), b.Min)
	}
	lo = b.Min
	if b.Jitter == EqualJitter {
		lo = max(b.Min, hi/2)
	}
	return lo, hi
}

// Delay returns a random delay for the n-th retry, within Window(n).
func (b Backoff) Delay(n int) time.Duration { return b.delay(n, rand.Float64()) }

// delay maps r in [0, 1) onto Window(n).
func (b Backoff) delay(n int, r float64) time.Duration {
	lo, hi := b.Window(n)
	return lo + time.Duration(r*float64(hi-lo))
}
