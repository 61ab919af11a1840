package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// runSlow broadcasts ~1 KiB pushes at a fixed rate to N sessions; after a
// warm-up (--settle, 3 s by default) and a baseline phase, 1% of them stop
// reading (they stop calling Recv; each is on its own connection with
// 64 KiB windows, so flow control really fills and the server's writer
// for it blocks). It reports the other sessions' latency before, while
// and after the stalled ones are alive (whole, and up to the server's
// sent_at stamp), how long the server takes to end every stalled session
// (seen through the public API: Broadcast's delivered count drops by the
// stalled count), the status each stalled client finally reads once it
// resumes, and the server's RSS.
func runSlow(ctx context.Context, e *env) error {
	cfg, rep := e.cfg, e.rep
	n := orDefault(cfg.sessions, 1000)
	nSlow := max(1, int(math.Round(float64(n)*cfg.slowFrac)))
	nOthers := n - nSlow
	if nOthers < 1 {
		return fmt.Errorf("--sessions %d leaves no reading sessions", n)
	}
	nconns, _ := cfg.connLayout(nOthers)
	rate := orDefault(cfg.rate, 50)
	payload := cfg.payloadBytes
	if payload < 0 {
		payload = 1024
	}
	stallCap := orDefault(cfg.duration, 20*time.Second)
	const tail = 3 * time.Second
	// A warm-up at the same rate, not measured: the first seconds after a
	// thousand sessions connect (the server's heap and pools growing to
	// the load) were the noisiest of a run, and made the baseline's p99
	// swing 63-326 ms.
	warm := cfg.settle
	if warm <= 0 {
		warm = 3 * time.Second
	}
	kWarm := int(math.Ceil(warm.Seconds() * rate))
	kStall := kWarm + int(math.Ceil(cfg.baseline.Seconds()*rate))
	maxCount := kStall + int((stallCap+tail).Seconds()*rate) + 1
	rep.Variant = fmt.Sprintf("sessions=%d stalled=%d conns=%d+%d payload=%dB rate=%.0f/s", n, nSlow, nconns, nSlow, payload, rate)
	if cfg.slowControl {
		rep.Variant += " control (none stalls)"
	}

	var othersEnded atomic.Int64
	// The reading sessions use --client's kind; the stalled ones are
	// always grpc-go's, whose streams stop reading one at a time.
	conns, err := dialClients(e.t, cfg.client, nconns, 1)
	if err != nil {
		return err
	}
	defer conns.close()
	slowConns, err := dialConns(e.t, nSlow, 1+nconns, true)
	if err != nil {
		return err
	}
	defer closeConns(slowConns)
	others, _, err := openSessions(ctx, sessionSpec{
		n: nOthers, conns: conns, prefix: e.runID, parallel: cfg.dialParallel, expect: maxCount,
		onPush: func(s *session, f *frameInfo, now int64) {
			if f.t > 0 {
				s.record(sample{idx: f.idx, total: now - f.t, toSrv: f.sentAt - f.t})
			}
		},
		onEnd: func(*session) { othersEnded.Add(1) },
	}, e.pr)
	defer closeSessions(others, 10*time.Second)
	if err != nil {
		return err
	}
	stalled, _, err := openSessions(ctx, sessionSpec{n: nSlow, conns: clientConns{grpc: slowConns}, prefix: e.runID + "-slow", parallel: cfg.dialParallel}, e.pr)
	defer closeSessions(stalled, 10*time.Second)
	if err != nil {
		return err
	}
	rep.Target.HeartbeatInterval, rep.Target.HeartbeatTimeout = others[0].hbInterval.String(), others[0].hbTimeout.String()
	pub, err := newPublisher(e.t, payload)
	if err != nil {
		return err
	}
	defer pub.close()

	// RSS, sampled every 100 ms.
	type rssAt struct {
		at  time.Time
		rss float64
	}
	var rssMu sync.Mutex
	var rssSamples []rssAt
	rssStop := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-rssStop:
				return
			case now := <-t.C:
				if v := e.t.rss(ctx); v > 0 {
					rssMu.Lock()
					rssSamples = append(rssSamples, rssAt{now, v})
					rssMu.Unlock()
				}
			}
		}
	}()
	rssBefore := e.t.rss(ctx)

	var stallAt atomic.Int64 // unix ns when the stalled clients stopped reading
	kEnd := atomic.Int64{}   // first push whose delivered count shows every stalled session ended
	kEnd.Store(math.MaxInt64)
	var endSeenAt atomic.Int64 // unix ns of that push's response
	var stopAt atomic.Int64    // unix ns when publishing stops
	var pubErrs atomic.Int64
	start := time.Now().Add(10 * time.Millisecond)
	stopAt.Store(start.Add(warm + cfg.baseline + stallCap + tail).UnixNano())
	e.pr.printf("slow: %d broadcasts/s of %d B to %d sessions; %d stop reading after %v of warm-up and %v of baseline", int(rate), payload, n, nSlow, warm, cfg.baseline)
	stop := e.pr.every(time.Second, func() string {
		ended := 0
		for _, s := range stalled {
			if s.ended() {
				ended++
			}
		}
		state := "baseline"
		if stallAt.Load() != 0 {
			state = "stalled"
		}
		if kEnd.Load() != math.MaxInt64 {
			state = "after every stalled session ended (server side)"
		}
		return fmt.Sprintf("slow: %s; %d others ended", state, othersEnded.Load())
	})
	srv0, cpu0 := e.t.cpuSeconds(ctx), cpuNow()
	_, issued := openLoop(maxCount, rate, 64, start, ctx.Done(),
		func() bool { return time.Now().UnixNano() >= stopAt.Load() },
		func(k int, sched time.Time) {
			if k == kStall {
				if !cfg.slowControl {
					for _, s := range stalled {
						s.stall.Store(true)
					}
				}
				stallAt.Store(time.Now().UnixNano())
			}
			resp, err := pub.broadcast(ctx, int64(k), sched.UnixNano())
			if err != nil {
				pubErrs.Add(1)
				return
			}
			if k > kStall && int64(resp.GetDelivered()) <= int64(nOthers)-othersEnded.Load() {
				for {
					old := kEnd.Load()
					if int64(k) >= old || kEnd.CompareAndSwap(old, int64(k)) {
						break
					}
				}
				if endSeenAt.CompareAndSwap(0, time.Now().UnixNano()) {
					stopAt.Store(time.Now().Add(tail).UnixNano())
				}
			}
		})
	time.Sleep(time.Second) // let the last pushes reach the reading sessions
	stop()
	cpu := cpuSince(cpu0)
	srv := e.t.cpuSeconds(ctx) - srv0
	close(rssStop)
	<-rssDone

	// The stalled clients read again: each reads what its windows held,
	// then the status its stream ended with.
	for _, s := range stalled {
		s.resumeReading()
	}
	// One deadline for all: a timer's channel fires once, and a second
	// session still open would wait for it forever.
	drainCtx, drainCancel := context.WithTimeout(ctx, 5*time.Second)
	for _, s := range stalled {
		select {
		case <-s.done:
		case <-drainCtx.Done():
		}
	}
	drainCancel()

	ke := kEnd.Load()
	ended := ke != math.MaxInt64
	hiB := int64(issued)
	if ended {
		hiB = ke
	}
	pa := collect(others, idxRange(int64(kWarm), int64(kStall)))
	pb := collect(others, idxRange(int64(kStall), hiB))
	pc := collect(others, idxRange(hiB, int64(issued)))
	a, b, c := summarize(totalsOf(pa)), summarize(totalsOf(pb)), summarize(totalsOf(pc))
	rep.metric("broadcasts", float64(issued), "", fmt.Sprintf("%d errors", pubErrs.Load()))
	if cfg.seriesOut != "" {
		if err := writeSeries(cfg.seriesOut, slices.Concat(pa, pb, pc), start, time.Duration(float64(time.Second)/rate)); err != nil {
			return err
		}
	}
	rep.latency("others.baseline", a)
	rep.latency("others.with_stalled", b)
	rep.latency("others.after_stalled_ended", c)
	// The part before the fan-out: from the scheduled time to the server's
	// sent_at stamp (the publisher and the Broadcast call).
	rep.latency("others.baseline.to_server", summarize(toServerOf(pa)))
	rep.latency("others.with_stalled.to_server", summarize(toServerOf(pb)))
	rep.latency("others.after_stalled_ended.to_server", summarize(toServerOf(pc)))
	ratio := math.NaN()
	if a.P99Ms > 0 {
		ratio = b.P99Ms / a.P99Ms
	}
	rep.metric("others.p99_ratio", ratio, "x", "with stalled / baseline")
	if c.P99Ms > 0 {
		rep.metric("others.p99_ratio_after", b.P99Ms/c.P99Ms, "x", "with stalled / after every stalled session ended: the same run's other phase without them")
	}
	rep.check("slow 1%: others' p99 with stalled clients", "<= 1.2x baseline",
		fmt.Sprintf("%.2fx (%.2f ms vs %.2f ms)", ratio, b.P99Ms, a.P99Ms), b.Count > 0 && ratio <= 1.2)
	rep.metric("others.ended", float64(othersEnded.Load()), "", "")

	if ended && stallAt.Load() != 0 {
		endSecs := float64(endSeenAt.Load()-stallAt.Load()) / 1e9
		rep.metric("stalled.time_to_end_all", endSecs, "s", "stall start -> first Broadcast whose delivered count excludes every stalled session")
		rep.metric("stalled.broadcasts_absorbed", float64(ke-int64(kStall)), "", "pushes between the stall and the end of the last stalled session")
	} else {
		rep.metric("stalled.time_to_end_all", -1, "s", "NOT every stalled session was ended within the stall phase")
	}
	var codeOK, goodbye, notEnded int
	for _, s := range stalled {
		switch {
		case !s.ended():
			notEnded++
		case s.endCode() == codes.ResourceExhausted:
			codeOK++
		}
		if s.goodbye == presencev1.GoodbyeReason_GOODBYE_REASON_SLOW_CONSUMER {
			goodbye++
		}
	}
	rep.metric("stalled.resource_exhausted", float64(codeOK), "", fmt.Sprintf("of %d, status read after resuming; %d still open", nSlow, notEnded))
	rep.metric("stalled.goodbye_slow_consumer", float64(goodbye), "", "Goodbye SLOW_CONSUMER frames the stalled clients read")
	rep.check("slow: every stalled client ended", "all, status RESOURCE_EXHAUSTED", fmt.Sprintf("%d/%d", codeOK, nSlow), ended && codeOK == nSlow)

	// RSS: before, peak in the baseline, peak while stalled, at the end.
	rssMu.Lock()
	var peakA, peakB, last float64
	sa := stallAt.Load()
	for _, r := range rssSamples {
		if sa == 0 || r.at.UnixNano() < sa {
			peakA = max(peakA, r.rss)
		} else {
			peakB = max(peakB, r.rss)
		}
		last = r.rss
	}
	rssMu.Unlock()
	if rssBefore > 0 && peakA > 0 {
		const mib = 1 << 20
		rep.metric("rss.before", rssBefore/mib, "MiB", "")
		rep.metric("rss.peak_baseline", peakA/mib, "MiB", "")
		rep.metric("rss.peak_stalled", peakB/mib, "MiB", "")
		rep.metric("rss.end", last/mib, "MiB", "")
		growth := (peakB - peakA) / mib
		bound := float64(nSlow)*(1+2*64.0/1024) + 16
		rep.metric("rss.growth_while_stalled", growth, "MiB", fmt.Sprintf("bound used: %d x (1 MiB queue + 2x64 KiB windows) + 16 MiB", nSlow))
		rep.check("slow: server RSS bounded", fmt.Sprintf("growth <= %.0f MiB", bound), fmt.Sprintf("%.1f MiB", growth), growth <= bound)
	}
	rep.cpu("run", cpu)
	rep.serverCPU("run", srv, cpu.WallSec)
	ends := endTally(others)
	for k, v := range endTally(stalled) {
		ends["stalled:"+k] += v
	}
	rep.Ends = ends
	e.pr.printf("slow: others p99 %.2f ms -> %.2f ms; stalled ended %d/%d", a.P99Ms, b.P99Ms, codeOK, nSlow)
	return nil
}
