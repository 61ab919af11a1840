package main

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// runIdle opens N sessions that identify and heartbeat at the server's
// announced interval, waits for them to settle, and reports what each costs
// the server: RSS ((after-before)/N, from /proc/PID/status), goroutines
// (go_goroutines), and the heap and stack parts of it (/metrics).
func runIdle(ctx context.Context, e *env) error {
	cfg, rep := e.cfg, e.rep
	n := orDefault(cfg.sessions, 10000)
	nconns, per := cfg.connLayout(n)
	rep.Variant = fmt.Sprintf("sessions=%d conns=%d streams/conn=%d", n, nconns, per)

	before, err := e.t.sample(ctx)
	if err != nil {
		return fmt.Errorf("server before: %w", err)
	}
	if before.sessions > 0 {
		rep.note("the server already had %v sessions before the run; per-session figures are skewed", before.sessions)
	}
	conns, err := dialClients(e.t, cfg.client, nconns, 0)
	if err != nil {
		return err
	}
	defer conns.close()

	var ended atomic.Int64
	cpu0 := cpuNow()
	t0 := time.Now()
	sessions, failed, err := openSessions(ctx, sessionSpec{
		n: n, conns: conns, prefix: e.runID, parallel: cfg.dialParallel,
		onEnd: func(*session) { ended.Add(1) },
	}, e.pr)
	defer closeSessions(sessions, 10*time.Second)
	if err != nil {
		return err
	}
	openDur := time.Since(t0)
	rep.cpu("open", cpuSince(cpu0))
	hb := sessions[0].hbInterval
	rep.Target.HeartbeatInterval, rep.Target.HeartbeatTimeout = hb.String(), sessions[0].hbTimeout.String()

	settle := orDefault(cfg.settle, hb+2*time.Second)
	e.pr.printf("settling for %v (every session pings at least once)", settle)
	srv0 := e.t.cpuSeconds(ctx)
	cpu1 := cpuNow()
	if !sleepUntil(time.Now().Add(settle), ctx.Done()) {
		return ctx.Err()
	}
	// Goroutines move as writers come and go for Pongs: take the median
	// of a few samples.
	var samples []serverSample
	for i := 0; i < 5; i++ {
		s, err := e.t.sample(ctx)
		if err != nil {
			return fmt.Errorf("server after: %w", err)
		}
		samples = append(samples, s)
		time.Sleep(200 * time.Millisecond)
	}
	after := medianSample(samples)
	settleCPU := cpuSince(cpu1)
	srvCPU := e.t.cpuSeconds(ctx) - srv0
	if err := e.heapProfile(); err != nil {
		return err
	}

	live := float64(len(sessions) - int(ended.Load()))
	rep.metric("sessions.live", live, "sessions", fmt.Sprintf("%d failed to open, %d ended", failed, ended.Load()))
	rep.metric("open.seconds", openDur.Seconds(), "s", "")
	rep.metric("open.rate", float64(len(sessions))/openDur.Seconds(), "sessions/s", fmt.Sprintf("%d at once", cfg.dialParallel))
	perSession := func(a, b float64) float64 { return (a - b) / live }
	if before.rss > 0 && after.rss > 0 {
		rep.metric("rss.before", before.rss/(1<<20), "MiB", "")
		rep.metric("rss.after", after.rss/(1<<20), "MiB", "")
		rss := perSession(after.rss, before.rss) / 1024
		rep.metric("rss.per_session", rss, "KiB", "VmRSS delta / live sessions")
		rep.check("idle RSS per session", "<= 24 KiB", fmt.Sprintf("%.1f KiB", rss), rss <= 24)
	} else {
		rep.note("server RSS unknown: give --server-pid")
	}
	rep.metric("heap_inuse.per_session", perSession(after.heapInuse, before.heapInuse)/1024, "KiB", "go_memstats_heap_inuse_bytes delta")
	rep.metric("stack_inuse.per_session", perSession(after.stackInuse, before.stackInuse)/1024, "KiB", "go_memstats_stack_inuse_bytes delta")
	if before.rss > 0 && after.rss > 0 {
		other := perSession(after.rss-after.heapInuse-after.stackInuse, before.rss-before.heapInuse-before.stackInuse) / 1024
		rep.metric("other_rss.per_session", other, "KiB", "RSS not in heap or stacks: runtime, fragmentation, freed-but-kept")
	}
	rep.metric("goroutines.before", before.goroutines, "", "")
	rep.metric("goroutines.after", after.goroutines, "", "median of 5 samples")
	g := perSession(after.goroutines, before.goroutines)
	rep.metric("goroutines.per_session", g, "", "")
	rep.check("idle goroutines per session", "<= 5", fmt.Sprintf("%.2f", g), g <= 5)
	if after.sessions >= 0 {
		rep.metric("server.presence_sessions", after.sessions, "", "from /metrics")
	}
	rep.cpu("settle", settleCPU)
	rep.serverCPU("settle", srvCPU, settleCPU.WallSec)
	rep.Ends = endTally(sessions)
	e.pr.printf("rss %.1f KiB/session, %.2f goroutines/session", perSession(after.rss, before.rss)/1024, g)
	return nil
}

// medianSample is the sample with the median goroutine count, with the
// median of each memory figure.
func medianSample(s []serverSample) serverSample {
	pick := func(f func(serverSample) float64) float64 {
		v := make([]float64, len(s))
		for i := range s {
			v[i] = f(s[i])
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	out := s[len(s)-1]
	out.goroutines = pick(func(x serverSample) float64 { return x.goroutines })
	out.heapInuse = pick(func(x serverSample) float64 { return x.heapInuse })
	out.stackInuse = pick(func(x serverSample) float64 { return x.stackInuse })
	out.rss = pick(func(x serverSample) float64 { return x.rss })
	return out
}
