package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runFanout opens N sessions and broadcasts to them over gRPC, first at a
// fixed offered rate (open loop, latency from each broadcast's scheduled
// time), then at saturation: back to back for a bounded count, with at most
// --window broadcasts in flight (sent but not yet received by every
// session), so that the run measures how fast the server can deliver
// rather than how fast its queues overflow. Each push carries its publish
// time in the payload; the receiver's clock (the same machine) gives the
// latency. Sessions that end during the run are counted as evicted.
func runFanout(ctx context.Context, e *env) error {
	cfg, rep := e.cfg, e.rep
	n := orDefault(cfg.sessions, 10000)
	nconns, per := cfg.connLayout(n)
	rate := orDefault(cfg.rate, 2)
	dur := orDefault(cfg.duration, 15*time.Second)
	fixed := max(1, int(rate*dur.Seconds()))
	satCount := orDefault(cfg.count, 300)
	window := max(1, cfg.window)
	rep.Variant = fmt.Sprintf("sessions=%d conns=%d streams/conn=%d", n, nconns, per)
	rep.Detail["fixed_rate_per_s"] = rate
	rep.Detail["fixed_broadcasts"] = fixed
	rep.Detail["saturation_broadcasts"] = satCount
	rep.Detail["window"] = window

	tr := newTracker(fixed + satCount)
	conns, err := dialClients(e.t, cfg.client, nconns, 1)
	if err != nil {
		return err
	}
	defer conns.close()
	sessions, _, err := openSessions(ctx, sessionSpec{
		n: n, conns: conns, prefix: e.runID, parallel: cfg.dialParallel, expect: fixed + satCount,
		onPush: func(s *session, f *frameInfo, now int64) {
			// Sample first: once the tracker counts the last receipt
			// of a push, the phase ends and collects the samples.
			if f.t > 0 {
				s.record(sample{idx: f.idx, total: now - f.t, toSrv: f.sentAt - f.t})
			}
			tr.got(f.idx, now)
		},
		onEnd: func(*session) { tr.sessionEnded() },
	}, e.pr)
	defer closeSessions(sessions, 10*time.Second)
	if err != nil {
		return err
	}
	rep.Target.HeartbeatInterval, rep.Target.HeartbeatTimeout = sessions[0].hbInterval.String(), sessions[0].hbTimeout.String()
	pub, err := newPublisher(e.t, cfg.payloadBytes)
	if err != nil {
		return err
	}
	defer pub.close()
	// Let the last Identified frames and the first Pings drain.
	time.Sleep(500 * time.Millisecond)
	if cfg.quickAck && len(conns.raw) > 0 {
		n, err := quickAckAll(conns.raw)
		if err != nil {
			return fmt.Errorf("TCP_QUICKACK: %w", err)
		}
		rep.Detail["quickack_conns"] = n
	}

	// Phase 1: fixed offered rate.
	e.pr.printf("fixed rate: %d broadcasts at %.1f/s to %d sessions", fixed, rate, len(sessions))
	var mu sync.Mutex
	var pubErrs int
	var rpcLat []int64
	mem0, memErr := e.t.sample(ctx)
	srv0, cpu0 := e.t.cpuSeconds(ctx), cpuNow()
	stop := e.pr.every(time.Second, func() string {
		r, _ := tr.totals(0, int64(fixed))
		return fmt.Sprintf("fixed rate: %d deliveries, %d sessions ended", r, tr.ended.Load())
	})
	start := time.Now().Add(10 * time.Millisecond)
	lag, issued := openLoop(fixed, rate, 64, start, ctx.Done(), nil, func(k int, sched time.Time) {
		t0 := time.Now()
		resp, err := pub.broadcast(ctx, int64(k), sched.UnixNano())
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			pubErrs++
			return
		}
		rpcLat = append(rpcLat, time.Since(t0).Nanoseconds())
		tr.sent(int64(k), resp.GetDelivered())
	})
	for k := 0; k < issued; k++ {
		tr.wait(int64(k), time.Now().Add(5*time.Second), ctx.Done())
	}
	stop()
	fixedCPU := cpuSince(cpu0)
	fixedSrv := e.t.cpuSeconds(ctx) - srv0
	mem1, mem1Err := e.t.sample(ctx)
	recv, deliv := tr.totals(0, int64(fixed))
	rep.metric("fixed.broadcasts", float64(issued), "", fmt.Sprintf("%.1f/s offered, %d errors", rate, pubErrs))
	rep.metric("fixed.deliveries", float64(recv), "", fmt.Sprintf("server queued %d", deliv))
	if memErr == nil && mem1Err == nil {
		serverAllocs(rep, "fixed", mem0, mem1, fixedCPU.WallSec, recv)
	}
	fixedSamples := collect(sessions, idxRange(0, int64(fixed)))
	fl := summarize(totalsOf(fixedSamples))
	if cfg.seriesOut != "" {
		// A line per broadcast: whether a p99 comes from every wave or
		// from a few waves that were late.
		if err := writeSeries(cfg.seriesOut, fixedSamples, start, time.Duration(float64(time.Second)/rate)); err != nil {
			return err
		}
	}
	rep.latency("fixed.latency", fl)
	rep.latency("fixed.broadcast_rpc", summarize(rpcLat))
	rep.latency("fixed.tool_lag", summarize(lag))
	rep.cpu("fixed", fixedCPU)
	rep.serverCPU("fixed", fixedSrv, fixedCPU.WallSec)
	rep.check(fmt.Sprintf("fanout %.0f/s x %d p99", rate, len(sessions)), "<= 100 ms", fmt.Sprintf("%.1f ms", fl.P99Ms), fl.P99Ms <= 100 && fl.Count > 0)
	endedFixed := tr.ended.Load()

	// Phase 2: saturation, bounded by count and 2x --duration.
	e.pr.printf("saturation: %d broadcasts back to back, window %d", satCount, window)
	first := int64(fixed)
	sr := saturate(ctx, e.pr, tr, pub, saturation{
		first: first, count: satCount, window: window, capAt: time.Now().Add(2 * dur),
		srvCPU: func() float64 { return e.t.cpuSeconds(ctx) },
	})
	nsent, satErrs, satRPC, satCPU, satSrv, elapsed := sr.sent, sr.errs, sr.rpc, sr.cpu, sr.srvSec, sr.elapsed
	if err := e.heapProfile(); err != nil {
		return err
	}
	recv, deliv = tr.totals(first, first+nsent)
	perSec := float64(recv) / elapsed.Seconds()
	endedSat := tr.ended.Load() - endedFixed
	rep.metric("saturation.broadcasts", float64(nsent), "", fmt.Sprintf("window %d, %d errors", window, satErrs))
	rep.metric("saturation.deliveries", float64(recv), "", fmt.Sprintf("server queued %d; lost %d", deliv, deliv-recv))
	rep.metric("saturation.seconds", elapsed.Seconds(), "s", "first send to last receipt")
	rep.metric("saturation.deliveries_per_s", perSec, "deliveries/s", "")
	rep.perServerCPU("saturation.deliveries_per_server_cpu_s", float64(recv), satSrv, "deliveries/s")
	if t := satCPU.UserSec + satCPU.SysSec; t > 0 {
		rep.metric("saturation.deliveries_per_tool_cpu_s", float64(recv)/t, "deliveries/s", "the bench's own capacity: if below the server's, the tool is the limit")
	}
	if satSrv > 0 {
		est := float64(recv) / satSrv
		rep.check(fmt.Sprintf("fanout saturated x %d, per server CPU-second (estimate)", len(sessions)), ">= 180000/s", fmt.Sprintf("%.0f/s", est), est >= 180000)
	}
	rep.cpu("saturation", satCPU)
	rep.serverCPU("saturation", satSrv, satCPU.WallSec)
	rep.latency("saturation.latency", summarize(totalsOf(collect(sessions, idxRange(first, first+nsent)))))
	rep.latency("saturation.broadcast_rpc", summarize(satRPC))
	rep.metric("evicted", float64(tr.ended.Load()), "sessions", fmt.Sprintf("%d in the fixed phase, %d at saturation", endedFixed, endedSat))
	rep.check(fmt.Sprintf("fanout saturated x %d deliveries/s", len(sessions)), ">= 180000/s", fmt.Sprintf("%.0f/s", perSec), perSec >= 180000)
	rep.check("fanout saturated: no eviction", "0 sessions ended", fmt.Sprintf("%d", endedSat), endedSat == 0)
	if satCPU.Limited {
		rep.note("the saturation figure is at the bench's CPU limit: the server may deliver faster than measured")
	}
	rep.Ends = endTally(sessions)
	e.pr.printf("saturation: %.0f deliveries/s, fixed p99 %.1f ms, %d evicted", perSec, fl.P99Ms, tr.ended.Load())
	return nil
}

// saturation says how to run a saturation phase.
type saturation struct {
	base   int64 // push index of tracker slot 0 (the payload's "i" is base+slot)
	first  int64 // first tracker slot to use
	count  int   // broadcasts to send at most
	window int   // broadcasts in flight at most
	capAt  time.Time
	srvCPU func() float64 // the server(s)' CPU seconds so far, or -1
}

// satResult is what a saturation phase measured.
type satResult struct {
	sent    int64   // broadcasts sent (slots first..first+sent)
	errs    int     // Broadcast calls that failed
	rpc     []int64 // Broadcast call latencies, ns
	cpu     CPU     // the tool's CPU over the phase
	srvSec  float64 // the server(s)' CPU seconds over the phase
	elapsed time.Duration
}

// saturate broadcasts back to back through pub, at most s.window in
// flight (sent but not yet received by every session the server queued
// them to), so that it measures how fast the server can deliver rather
// than how fast its queues overflow; bounded by s.count and s.capAt. The
// Broadcast calls themselves overlap, as several backends' would: a call
// waiting for the server counts against the window like a push on its
// way to the clients. Then it waits (5 s at most per broadcast) for the
// last receipts. elapsed runs from the first send to the last receipt.
func saturate(ctx context.Context, pr *progress, tr *tracker, pub *publisher, s saturation) satResult {
	var r satResult
	srv0, cpu0 := s.srvCPU(), cpuNow()
	start := time.Now()
	var sent atomic.Int64
	var lastSec int64 // progress printer only
	stop := pr.every(time.Second, func() string {
		ns := sent.Load()
		got, _ := tr.totals(s.first, s.first+ns)
		d := got - lastSec
		lastSec = got
		return fmt.Sprintf("saturation: %d/%d sent, %d deliveries (%d/s), %d sessions ended", ns, s.count, got, d, tr.ended.Load())
	})
	var (
		wg sync.WaitGroup
		mu sync.Mutex // guards r.errs and r.rpc while calls are in flight
	)
	for k := int64(0); k < int64(s.count) && ctx.Err() == nil && time.Now().Before(s.capAt); k++ {
		idx := s.first + k
		if k >= int64(s.window) && !tr.wait(idx-int64(s.window), s.capAt, ctx.Done()) {
			break
		}
		sent.Store(k + 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			resp, err := pub.broadcast(ctx, s.base+idx, t0.UnixNano())
			rpc := time.Since(t0).Nanoseconds()
			mu.Lock()
			if err != nil {
				r.errs++
			} else {
				r.rpc = append(r.rpc, rpc)
			}
			mu.Unlock()
			tr.sent(idx, resp.GetDelivered()) // 0 when the call failed: nothing to wait for
		}()
	}
	wg.Wait()
	r.sent = sent.Load()
	for k := int64(0); k < r.sent; k++ {
		tr.wait(s.first+k, time.Now().Add(5*time.Second), ctx.Done())
	}
	stop()
	r.cpu = cpuSince(cpu0)
	if srv1 := s.srvCPU(); srv0 >= 0 && srv1 >= 0 {
		r.srvSec = srv1 - srv0
	} else {
		r.srvSec = -1
	}
	r.elapsed = time.Duration(tr.last.Load() - start.UnixNano())
	if r.elapsed <= 0 {
		r.elapsed = time.Since(start)
	}
	return r
}

// serverAllocs reports what the server allocated and how often it
// collected during a phase, from two scrapes of its /metrics: a GC's mark
// phase shares the server's one core with the wave it overlaps. The
// objects per delivery count all the phase's work (Pings and the
// broadcast calls too) and the second scrape's own allocations.
func serverAllocs(rep *Report, phase string, before, after serverSample, wall float64, recv int64) {
	rep.metric(phase+".server_gcs", after.gcCount-before.gcCount, "", "GCs the server completed in the phase")
	if wall > 0 {
		rep.metric(phase+".server_alloc_mb_per_s", (after.allocBytes-before.allocBytes)/1e6/wall, "MB/s", "heap allocation rate (go_memstats_alloc_bytes_total)")
	}
	if recv > 0 {
		rep.metric(phase+".server_allocs_per_delivery", (after.mallocs-before.mallocs)/float64(recv), "objects", "go_memstats_mallocs_total over deliveries; Pings and broadcast calls included")
	}
}
