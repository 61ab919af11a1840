package main

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// publisher sends Broadcasts over the gRPC BackendService on a connection
// of its own. Each payload is {"t": <unix ns>, "i": <bench index>} (both
// strings: JSON numbers are doubles), padded with "p" to payloadBytes.
type publisher struct {
	cc     *grpc.ClientConn
	client presencev1.BackendServiceClient
	pad    string
}

func newPublisher(t *target, payloadBytes int) (*publisher, error) {
	cc, err := t.newConn(0, false)
	if err != nil {
		return nil, err
	}
	p := &publisher{cc: cc, client: presencev1.NewBackendServiceClient(cc)}
	// "t" and "i" with their framing take about 50 bytes of the payload.
	if payloadBytes > 64 {
		p.pad = strings.Repeat("x", payloadBytes-56)
	}
	return p, nil
}

func (p *publisher) close() { p.cc.Close() }

// broadcast sends push idx stamped with t (unix ns).
func (p *publisher) broadcast(ctx context.Context, idx, t int64) (*presencev1.BroadcastResponse, error) {
	fields := map[string]*structpb.Value{
		"t": structpb.NewStringValue(strconv.FormatInt(t, 10)),
		"i": structpb.NewStringValue(strconv.FormatInt(idx, 10)),
	}
	if p.pad != "" {
		fields["p"] = structpb.NewStringValue(p.pad)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return p.client.Broadcast(ctx, &presencev1.BroadcastRequest{
		Payload: &presencev1.BroadcastRequest_Data{Data: structpb.NewStructValue(&structpb.Struct{Fields: fields})},
	})
}

// tracker counts, per bench push index, how many sessions received it
// against how many the server said it queued it to, so a publisher can
// keep a bounded number of pushes in flight.
type tracker struct {
	recv   []atomic.Int64
	exp    []atomic.Int64 // delivered+1 once the response is in; 0 before
	ended  atomic.Int64   // sessions that ended: they will not receive what is left
	last   atomic.Int64   // unix ns of the latest receipt
	notify chan struct{}  // one-slot signal: something may have completed
}

func newTracker(n int) *tracker {
	return &tracker{recv: make([]atomic.Int64, n), exp: make([]atomic.Int64, n), notify: make(chan struct{}, 1)}
}

func (tr *tracker) signal() {
	select {
	case tr.notify <- struct{}{}:
	default:
	}
}

// got records a receipt of push idx at now.
func (tr *tracker) got(idx, now int64) {
	if idx < 0 || idx >= int64(len(tr.recv)) {
		return
	}
	n := tr.recv[idx].Add(1)
	if e := tr.exp[idx].Load(); e != 0 && n >= e-1 {
		tr.signal()
	}
	for {
		old := tr.last.Load()
		if now <= old || tr.last.CompareAndSwap(old, now) {
			break
		}
	}
}

// sessionEnded records that a session will receive nothing more.
func (tr *tracker) sessionEnded() {
	tr.ended.Add(1)
	tr.signal()
}

// sent records how many sessions the server queued push idx to.
func (tr *tracker) sent(idx int64, delivered uint32) {
	tr.exp[idx].Store(int64(delivered) + 1)
	tr.signal()
}

// complete reports whether every session the push was queued to has
// received it (or has ended).
func (tr *tracker) complete(idx int64) bool {
	e := tr.exp[idx].Load()
	return e != 0 && tr.recv[idx].Load()+tr.ended.Load() >= e-1
}

// wait blocks until push idx is complete, done is closed, or the deadline
// passes; it reports completion.
func (tr *tracker) wait(idx int64, deadline time.Time, done <-chan struct{}) bool {
	for !tr.complete(idx) {
		d := time.Until(deadline)
		if d <= 0 {
			return false
		}
		t := time.NewTimer(min(d, 50*time.Millisecond))
		select {
		case <-tr.notify:
		case <-t.C:
		case <-done:
			t.Stop()
			return false
		}
		t.Stop()
	}
	return true
}

// totals sums receipts and server-reported deliveries over [from, to).
func (tr *tracker) totals(from, to int64) (recv, delivered int64) {
	for i := from; i < to; i++ {
		recv += tr.recv[i].Load()
		if e := tr.exp[i].Load(); e > 0 {
			delivered += e - 1
		}
	}
	return recv, delivered
}

// openLoop calls fn(k, scheduled) for k in [0, count), the k-th at
// start+k/rate, each on its own goroutine, whether or
// not earlier calls have finished: latency is measured from the scheduled
// time, so a slow server cannot hide its slowness by slowing the sender
// (no coordinated omission). It returns how late each call started
// relative to its schedule (the tool's own lag) and stops early when stop
// returns true or done is closed.
func openLoop(count int, rate float64, parallel int, start time.Time, done <-chan struct{}, stop func() bool, fn func(k int, sched time.Time)) (lag []int64, issued int) {
	period := time.Duration(float64(time.Second) / rate)
	sem := make(chan struct{}, max(1, parallel))
	var wg sync.WaitGroup
	defer wg.Wait()
	lag = make([]int64, 0, count)
	w := newPreciseWaiter()
	defer w.close()
	for k := 0; k < count; k++ {
		sched := start.Add(time.Duration(k) * period)
		if !w.wait(sched, done) || (stop != nil && stop()) {
			return lag, k
		}
		select {
		case sem <- struct{}{}:
		case <-done:
			return lag, k
		}
		lag = append(lag, time.Since(sched).Nanoseconds())
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(k, sched)
		}()
	}
	return lag, count
}

// waitSpin waits until t: a Go timer to within spin of it, then a
// yielding spin, so an open-loop schedule is kept to microseconds and the
// tool's own lateness does not count as server latency. While it spins
// the scheduler does not poll the network (a spinner is always runnable),
// so a socket that becomes ready waits for the spin to end: the spin must
// be short. It reports whether t was reached before done was closed.
func waitSpin(t time.Time, spin time.Duration, done <-chan struct{}) bool {
	if !sleepUntil(t.Add(-spin), done) {
		return false
	}
	for time.Now().Before(t) {
		runtime.Gosched() // let receivers run on a one-CPU bench
	}
	return true
}

// collect gathers the samples of every session that keep selects.
func collect(sessions []*session, keep func(sample) bool) []sample {
	var out []sample
	for _, s := range sessions {
		out = s.appendSamples(out, keep)
	}
	return out
}

// totalsOf returns the total latencies of samples, in ns.
func totalsOf(xs []sample) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = x.total
	}
	return out
}

// toServerOf is each sample's time from the reference to the server's
// sent_at stamp: what came before the fan-out (the publisher, the RPC).
func toServerOf(xs []sample) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = x.toSrv
	}
	return out
}

// idxRange selects samples with lo <= idx < hi.
func idxRange(lo, hi int64) func(sample) bool {
	return func(x sample) bool { return x.idx >= lo && x.idx < hi }
}
