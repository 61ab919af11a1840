package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// runChurn runs connect/identify/disconnect cycles with --workers
// concurrent workers, bounded by --count cycles and --duration. Each cycle
// (by default on a new TCP connection, as a reconnecting client) opens
// Connect, sends Identify, waits for Identified, half-closes and reads to
// the end of the stream. It reports sessions per second, then whether the
// server's goroutines come back to their baseline and its heap in use
// comes back within 10% after its next GC.
func runChurn(ctx context.Context, e *env) error {
	cfg, rep := e.cfg, e.rep
	workers := orDefault(cfg.workers, 32)
	count := orDefault(cfg.count, 50000)
	dur := orDefault(cfg.duration, 10*time.Second)
	rep.Variant = fmt.Sprintf("workers=%d new-conn-per-cycle=%v uids=%d", workers, cfg.churnNewConn, cfg.churnUids)

	settle := orDefault(cfg.settle, 6*time.Second)
	cycle := churnCycle
	if cfg.client == clientRaw {
		cycle = func(ctx context.Context, e *env, _ *grpc.ClientConn, uid string, i int) error {
			return rawChurnCycle(ctx, e.t, uid, i)
		}
	}
	if n := cfg.churnUids; n > 0 {
		// Warm-up: each uid of the population once, so that the state the
		// server keeps per uid on purpose (its last-seen time) is in the
		// baseline; then the churn adds no uid, and what it leaves is what
		// sessions leave.
		e.pr.printf("churn: warm-up, one session for each of the %d uids", n)
		var wg sync.WaitGroup
		var next atomic.Int64
		for range min(workers, n) {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < int64(n) && ctx.Err() == nil; i = next.Add(1) - 1 {
					cycle(ctx, e, nil, fmt.Sprintf("%s-c%d", e.runID, i), int(i))
				}
			})
		}
		wg.Wait()
		select {
		case <-time.After(settle):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	base, gcOK, err := e.t.waitGC(ctx, 20*time.Second)
	if err != nil {
		return fmt.Errorf("server baseline: %w", err)
	}
	if !gcOK {
		rep.note("no server GC seen before the baseline; heap baseline taken without one")
	}
	var conns []*grpc.ClientConn
	if !cfg.churnNewConn {
		if conns, err = dialConns(e.t, workers, 0, false); err != nil {
			return err
		}
	}

	var next, ok atomic.Int64
	var mu sync.Mutex
	failures := map[string]int{}
	lats := make([][]int64, workers)
	var lastDone atomic.Int64
	start := time.Now()
	end := start.Add(dur)
	stop := e.pr.every(time.Second, func() string {
		return fmt.Sprintf("churn: %d sessions done (%.0f/s)", ok.Load(), float64(ok.Load())/time.Since(start).Seconds())
	})
	srv0, cpu0 := e.t.cpuSeconds(ctx), cpuNow()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(end) {
				i := next.Add(1) - 1
				if i >= int64(count) {
					return
				}
				t0 := time.Now()
				var cc *grpc.ClientConn
				if conns != nil {
					cc = conns[w]
				}
				u := i
				if n := int64(e.cfg.churnUids); n > 0 {
					u = i % n
				}
				err := cycle(ctx, e, cc, fmt.Sprintf("%s-c%d", e.runID, u), int(i))
				if err != nil {
					mu.Lock()
					failures[status.Code(err).String()]++
					mu.Unlock()
					continue
				}
				now := time.Now()
				lats[w] = append(lats[w], now.Sub(t0).Nanoseconds())
				ok.Add(1)
				lastDone.Store(now.UnixNano())
			}
		}(w)
	}
	wg.Wait()
	stop()
	cpu := cpuSince(cpu0)
	srv := e.t.cpuSeconds(ctx) - srv0
	closeConns(conns)
	elapsed := time.Duration(lastDone.Load() - start.UnixNano())
	if elapsed <= 0 {
		elapsed = time.Since(start)
	}
	rate := float64(ok.Load()) / elapsed.Seconds()
	var all []int64
	for _, l := range lats {
		all = append(all, l...)
	}
	rep.metric("sessions", float64(ok.Load()), "", fmt.Sprintf("failures %v", failures))
	rep.metric("sessions_per_s", rate, "sessions/s", "")
	rep.latency("cycle", summarize(all))
	rep.perServerCPU("sessions_per_server_cpu_s", float64(ok.Load()), srv, "sessions/s")
	if t := cpu.UserSec + cpu.SysSec; t > 0 {
		rep.metric("sessions_per_tool_cpu_s", float64(ok.Load())/t, "sessions/s", "the bench's own capacity: if below the server's, the tool is the limit")
	}
	rep.cpu("run", cpu)
	rep.serverCPU("run", srv, cpu.WallSec)
	rep.check("churn sessions/s", ">= 3000/s", fmt.Sprintf("%.0f/s", rate), rate >= 3000)
	if srv > 0 {
		est := float64(ok.Load()) / srv
		rep.check("churn sessions/s per server CPU-second (estimate)", ">= 3000/s", fmt.Sprintf("%.0f/s", est), est >= 3000)
	}

	// Goroutines: poll until back at the baseline, up to 15 s.
	var after serverSample
	back := -1.0
	t0 := time.Now()
	for time.Since(t0) < 15*time.Second && ctx.Err() == nil {
		if after, err = e.t.sample(ctx); err != nil {
			return err
		}
		if after.goroutines <= base.goroutines {
			back = time.Since(t0).Seconds()
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	rep.metric("goroutines.before", base.goroutines, "", "")
	rep.metric("goroutines.after", after.goroutines, "", "")
	rep.metric("goroutines.seconds_to_baseline", back, "s", "-1: not back within 15 s")
	rep.check("churn: goroutines back to baseline", fmt.Sprintf("<= %.0f", base.goroutines), fmt.Sprintf("%.0f", after.goroutines), back >= 0)

	// Sessions that ended leave state the server keeps on purpose for a
	// while: a uid's OFFLINE waits --presence-grace (5 s by default) on
	// a timer. Let that pass before measuring what is left.
	e.pr.printf("churn: waiting %v (presence grace) before the GCs", settle)
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	gc1, ok1, err := e.t.waitGC(ctx, 20*time.Second)
	if err != nil {
		return err
	}
	gc2, ok2, err := e.t.waitGC(ctx, 20*time.Second)
	if err != nil {
		return err
	}
	const mib = 1 << 20
	rep.metric("heap_inuse.before", base.heapInuse/mib, "MiB", "after a GC, before the churn")
	rep.metric("heap_inuse.after_next_gc", gc1.heapInuse/mib, "MiB", fmt.Sprintf("GC seen: %v", ok1))
	rep.metric("heap_inuse.after_second_gc", gc2.heapInuse/mib, "MiB", fmt.Sprintf("GC seen: %v (sync.Pool victim caches survive one GC)", ok2))
	ratio := gc1.heapInuse / base.heapInuse
	rep.metric("heap_inuse.ratio_next_gc", ratio, "x", "")
	rep.metric("heap_inuse.ratio_second_gc", gc2.heapInuse/base.heapInuse, "x", "")
	// The memstats figures are read by a scrape after the GC, so they also
	// count what the server allocated since, the scrapes' own work
	// included: on a heap of a few MiB that is several percent either
	// way. A server that exports go_gc_heap_live_bytes says what its GC
	// marked live, which the check then uses.
	if base.heapLive > 0 && gc1.heapLive > 0 {
		rep.metric("heap_live.before", base.heapLive/mib, "MiB", "go_gc_heap_live_bytes: marked live by the GC before the churn")
		rep.metric("heap_live.after_next_gc", gc1.heapLive/mib, "MiB", "marked live by the next GC after it")
		rep.metric("heap_live.after_second_gc", gc2.heapLive/mib, "MiB", "")
		ratio = gc1.heapLive / base.heapLive
		rep.metric("heap_live.ratio_next_gc", ratio, "x", "")
		rep.check("churn: heap in use back within 10% after the next GC", "<= 1.10x", fmt.Sprintf("%.2fx (live, as the GC marked it)", ratio), ok1 && ratio <= 1.10)
		rep.check("churn: heap in use (spans, read after the GC) within 10%", "<= 1.10x", fmt.Sprintf("%.2fx", gc1.heapInuse/base.heapInuse), ok1 && gc1.heapInuse/base.heapInuse <= 1.10)
	} else {
		rep.check("churn: heap in use back within 10% after the next GC", "<= 1.10x", fmt.Sprintf("%.2fx", ratio), ok1 && ratio <= 1.10)
	}
	// heap_inuse counts whole spans: after a churn many spans hold a few
	// live objects each (fragmentation), which the next allocations reuse.
	// The live objects themselves are heap_alloc, read right after a GC.
	rep.metric("heap_alloc.before", base.heapAlloc/mib, "MiB", "live objects, after a GC, before the churn")
	rep.metric("heap_alloc.after_second_gc", gc2.heapAlloc/mib, "MiB", "")
	live := gc2.heapAlloc / base.heapAlloc
	rep.metric("heap_alloc.ratio_second_gc", live, "x", "")
	rep.check("churn: live heap back within 10% after two GCs", "<= 1.10x", fmt.Sprintf("%.2fx", live), ok2 && live <= 1.10)
	e.pr.printf("churn: %.0f sessions/s; goroutines %v -> %v; heap %.2fx after next GC", rate, base.goroutines, after.goroutines, ratio)
	return nil
}

// churnCycleTimeout bounds one churn cycle, connection included.
const churnCycleTimeout = 10 * time.Second

// churnCycle is one session's life: Connect, Identify, Identified,
// half-close, read to the end. cc nil means a connection of its own.
func churnCycle(ctx context.Context, e *env, cc *grpc.ClientConn, uid string, i int) error {
	if cc == nil {
		c, err := e.t.newConn(i, false)
		if err != nil {
			return err
		}
		defer c.Close()
		cc = c
	}
	ctx, cancel := context.WithTimeout(ctx, churnCycleTimeout)
	defer cancel()
	stream, err := presencev1.NewPresenceServiceClient(cc).Connect(ctx, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return err
	}
	if err := stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: uid}}}); err != nil {
		return err
	}
	var raw rawFrame
	var f frameInfo
	for f.kind != kindIdentified {
		if err := stream.RecvMsg(&raw); err != nil {
			return err
		}
		if err := decodeFrame(raw.b, &f); err != nil {
			return err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		err := stream.RecvMsg(&raw)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// rawChurnCycle is churnCycle with the raw client (--client raw), on a new
// connection from the i-th source address, all on the calling goroutine:
// the preface, SETTINGS, HEADERS and Identify go out in one write, frames
// are read until Identified, END_STREAM goes out, and frames are read
// until the trailers, whose grpc-status must be 0. Errors are gRPC status
// errors, as grpc-go's; the cycle's deadline or the run's end show as
// DeadlineExceeded or Canceled.
func rawChurnCycle(ctx context.Context, t *target, uid string, i int) error {
	ctx, cancel := context.WithTimeout(ctx, churnCycleTimeout)
	defer cancel()
	err := rawCycle(ctx, t, uid, i)
	if err != nil && ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return err
}

// rawBufs are a raw churn cycle's connection buffers, reused by later
// cycles: a cycle moves a few hundred bytes, and new buffers for each would
// be most of what the tool allocates.
type rawBufs struct {
	br *bufio.Reader
	bw *bufio.Writer
}

var rawBufPool = sync.Pool{New: func() any {
	return &rawBufs{br: bufio.NewReaderSize(nil, 4<<10), bw: bufio.NewWriterSize(nil, 4<<10)}
}}

func rawCycle(ctx context.Context, t *target, uid string, i int) error {
	c := &rawConn{addr: t.grpcAddr, src: sourceIP(i, t.srcAddrs), streams: map[uint32]*rawStream{}}
	bufs := rawBufPool.Get().(*rawBufs)
	defer rawBufPool.Put(bufs)
	nc, err := c.handshake(ctx, bufs.br, bufs.bw) // within ctx; refuses anything but 127.0.0.0/8
	if err != nil {
		return fmt.Errorf("Connect: %w", err)
	}
	defer func() {
		nc.Close()
		bufs.br.Reset(nil)
		bufs.bw.Reset(nil)
	}()
	c.nc = nc
	// Every read and write is bounded by the cycle's deadline, and the
	// run's end interrupts them.
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	s := &session{uid: uid, done: make(chan struct{})}
	st := &rawStream{c: c, s: s, ready: make(chan struct{})}
	s.sender = st
	c.batch = true // Identify goes out with the preface: one write
	err = s.identify()
	c.batch = false
	if err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		return status.Errorf(codes.Unavailable, "connection preface: %v", err)
	}
	c.readUntil(st.ready)
	if st.state == streamOpening {
		return status.Error(codes.Internal, "no Identified, and the stream did not end")
	}
	if st.openErr != nil {
		return fmt.Errorf("waiting for Identified %q: %w", uid, st.openErr)
	}
	if err := st.closeSend(); err != nil {
		return err
	}
	c.readUntil(s.done)
	if !s.ended() {
		return status.Error(codes.Internal, "the stream did not end")
	}
	if errors.Is(s.endErr, io.EOF) {
		return nil
	}
	return s.endErr
}
