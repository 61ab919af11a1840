package client

import (
	"context"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"
)

// TestBackoffWindows proves the windows grow by the multiplier from Min,
// cap at Max, and start at Min (full) or half the ceiling (equal).
func TestBackoffWindows(t *testing.T) {
	const ms = time.Millisecond
	type window struct{ lo, hi time.Duration }
	for _, tc := range []struct {
		name string
		b    Backoff
		want []window // for n = 0, 1, 2, ...
	}{
		{"defaults, full", Backoff{}, []window{
			{500 * ms, time.Second}, {500 * ms, 2 * time.Second}, {500 * ms, 4 * time.Second},
			{500 * ms, 8 * time.Second}, {500 * ms, 16 * time.Second}, {500 * ms, 30 * time.Second}, {500 * ms, 30 * time.Second},
		}},
		{"defaults, equal", Backoff{Jitter: EqualJitter}, []window{
			{500 * ms, time.Second}, {time.Second, 2 * time.Second}, {2 * time.Second, 4 * time.Second},
			{4 * time.Second, 8 * time.Second}, {8 * time.Second, 16 * time.Second}, {15 * time.Second, 30 * time.Second},
		}},
		{"multiplier 3", Backoff{Min: 10 * ms, Max: 100 * ms, Multiplier: 3}, []window{
			{10 * ms, 30 * ms}, {10 * ms, 90 * ms}, {10 * ms, 100 * ms},
		}},
		{"constant", Backoff{Min: time.Second, Max: time.Second, Multiplier: 1}, []window{
			{time.Second, time.Second}, {time.Second, time.Second},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for n, w := range tc.want {
				if lo, hi := tc.b.Window(n); lo != w.lo || hi != w.hi {
					t.Errorf("Window(%d) = [%v, %v]; want [%v, %v]", n, lo, hi, w.lo, w.hi)
				}
			}
		})
	}
}

// TestBackoffDelayWithinBounds proves every delay, for any attempt count
// (huge and negative ones too), lies in its window and within [Min, Max].
func TestBackoffDelayWithinBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, b := range []Backoff{
		{},
		{Jitter: EqualJitter},
		{Min: time.Millisecond, Max: time.Hour, Multiplier: 1.6},
		{Min: 3 * time.Second, Max: 4 * time.Second, Multiplier: 10, Jitter: EqualJitter},
	} {
		d := b.withDefaults()
		for _, n := range []int{-1, 0, 1, 2, 5, 10, 63, 64, 1000, 1 << 30} {
			lo, hi := b.Window(n)
			if lo < d.Min || hi > d.Max || lo > hi {
				t.Errorf("%+v: Window(%d) = [%v, %v]; want within [%v, %v]", b, n, lo, hi, d.Min, d.Max)
			}
			for _, r := range []float64{0, 0.5, 0.999999, rng.Float64(), rng.Float64()} {
				if got := b.delay(n, r); got < lo || got > hi {
					t.Errorf("%+v: delay(%d, %v) = %v; want within [%v, %v]", b, n, r, got, lo, hi)
				}
			}
			if got := b.Delay(n); got < lo || got > hi {
				t.Errorf("%+v: Delay(%d) = %v; want within [%v, %v]", b, n, got, lo, hi)
			}
		}
	}
}

// TestBackoffDefaults proves the zero value means the documented defaults
// and is valid.
func TestBackoffDefaults(t *testing.T) {
	got := Backoff{}.withDefaults()
	want := Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second, Multiplier: 2, Jitter: FullJitter, ResetAfter: 10 * time.Second}
	if got != want {
		t.Errorf("Backoff{} with defaults = %+v; want %+v", got, want)
	}
	if err := (Backoff{}).validate(); err != nil {
		t.Errorf("Backoff{}.validate() = %v; want nil", err)
	}
	if got := (Backoff{Min: time.Minute}).withDefaults().Max; got != time.Minute {
		t.Errorf("default Max with Min 1m = %v; want Min, 1m", got)
	}
}

// TestSleepWaitsOrStops proves the supervisor's wait lasts exactly the
// delay, and ends early, reporting so, when the client closes.
func TestSleepWaitsOrStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if !sleep(context.Background(), 1500*time.Millisecond) {
			t.Fatal("sleep(1.5s) = false; want true")
		}
		if got := time.Since(start); got != 1500*time.Millisecond {
			t.Errorf("sleep(1.5s) took %v; want 1.5s", got)
		}

		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		start = time.Now()
		if sleep(ctx, time.Hour) {
			t.Fatal("sleep(1h) with a cancel after 1s = true; want false")
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("cancelled sleep took %v; want 1s", got)
		}
	})
}
