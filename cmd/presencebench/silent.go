package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// runSilent opens N sessions, then makes a fraction of them go silent: they
// stop sending Ping but keep their TCP connection open and keep reading (no
// FIN, as a client whose network vanished or whose process hung). It
// measures, for each silent session, the time from its last frame to the
// end of its stream, against the bound timeout + reap interval + 1 s, and
// checks that the sessions still pinging on time survive several timeouts.
func runSilent(ctx context.Context, e *env) error {
	cfg, rep := e.cfg, e.rep
	n := orDefault(cfg.sessions, 1000)
	nconns, per := cfg.connLayout(n)
	nSilent := max(1, int(float64(n)*cfg.silentFrac+0.5))
	rep.Variant = fmt.Sprintf("sessions=%d silent=%d conns=%d streams/conn=%d", n, nSilent, nconns, per)

	conns, err := dialClients(e.t, cfg.client, nconns, 1)
	if err != nil {
		return err
	}
	defer conns.close()
	sessions, _, err := openSessions(ctx, sessionSpec{n: n, conns: conns, prefix: e.runID, parallel: cfg.dialParallel}, e.pr)
	defer closeSessions(sessions, 10*time.Second)
	if err != nil {
		return err
	}
	interval, timeout := sessions[0].hbInterval, sessions[0].hbTimeout
	rep.Target.HeartbeatInterval, rep.Target.HeartbeatTimeout = interval.String(), timeout.String()
	reap := cfg.reapInterval
	if reap == 0 {
		reap = orDefault(cfg.srv.reapInterval, 10*time.Second)
		if !cfg.inprocess && cfg.reapInterval == 0 {
			rep.note("--reap-interval not given: assuming the server default of 10s for the bound")
		}
	}
	bound := timeout + reap + time.Second
	observe := orDefault(cfg.duration, 3*timeout+reap)
	observe = max(observe, bound+time.Second)
	rep.Detail["reap_interval"] = reap.String()
	rep.Detail["bound"] = bound.String()
	rep.Detail["observe"] = observe.String()

	settle := orDefault(cfg.settle, interval)
	e.pr.printf("settling %v, then %d of %d sessions go silent (timeout %v, reap %v, bound %v); observing %v",
		settle, nSilent, len(sessions), timeout, reap, bound, observe)
	if !sleepUntil(time.Now().Add(settle), ctx.Done()) {
		return ctx.Err()
	}
	silent, onTime := sessions[:min(nSilent, len(sessions))], sessions[min(nSilent, len(sessions)):]
	t0 := time.Now()
	for _, s := range silent {
		s.silent.Store(true)
	}
	stop := e.pr.every(time.Second, func() string {
		a, b := 0, 0
		for _, s := range silent {
			if s.ended() {
				a++
			}
		}
		for _, s := range onTime {
			if s.ended() {
				b++
			}
		}
		return fmt.Sprintf("silent: %d/%d silent evicted, %d/%d on-time ended", a, len(silent), b, len(onTime))
	})
	cpu0 := cpuNow()
	sleepUntil(t0.Add(observe), ctx.Done())
	stop()
	rep.cpu("observe", cpuSince(cpu0))

	var lat []int64
	within, notEvicted, wrongReason := 0, 0, 0
	for _, s := range silent {
		if !s.ended() {
			notEvicted++
			continue
		}
		d := s.endAt - s.lastSent.Load()
		lat = append(lat, d)
		if time.Duration(d) <= bound {
			within++
		}
		if s.endCode() != codes.Unavailable || s.goodbye != presencev1.GoodbyeReason_GOODBYE_REASON_HEARTBEAT_TIMEOUT {
			wrongReason++
		}
	}
	onTimeEnded := 0
	for _, s := range onTime {
		if s.ended() {
			onTimeEnded++
		}
	}
	l := summarize(lat)
	rep.metric("silent.sessions", float64(len(silent)), "", "")
	rep.metric("silent.evicted", float64(len(lat)), "", fmt.Sprintf("%d not evicted within %v", notEvicted, observe))
	rep.metric("silent.within_bound", float64(within), "", fmt.Sprintf("bound = timeout %v + reap %v + 1s", timeout, reap))
	rep.latency("silent.last_frame_to_end", l)
	rep.metric("silent.min_over_timeout", l.MinMs-float64(timeout.Milliseconds()), "ms", "earliest eviction minus the timeout (must be >= 0)")
	rep.metric("silent.wrong_reason", float64(wrongReason), "", "ended without UNAVAILABLE + Goodbye HEARTBEAT_TIMEOUT")
	rep.metric("ontime.sessions", float64(len(onTime)), "", "")
	rep.metric("ontime.ended", float64(onTimeEnded), "", fmt.Sprintf("over %v = %.1f timeouts", observe, float64(observe)/float64(timeout)))
	rep.check("silent: every silent client evicted within timeout+reap+1s", "<= "+bound.String(),
		fmt.Sprintf("%d/%d, max %.0f ms", within, len(silent), l.MaxMs), within == len(silent))
	rep.check("silent: no eviction before the timeout", ">= "+timeout.String(), fmt.Sprintf("min %.0f ms", l.MinMs), len(lat) > 0 && l.MinMs >= float64(timeout.Milliseconds()))
	rep.check("silent: on-time clients survive", "0 ended", fmt.Sprintf("%d", onTimeEnded), onTimeEnded == 0)
	rep.Ends = endTally(sessions)
	e.pr.printf("silent: %d/%d within %v (max %.0f ms); %d on-time ended", within, len(silent), bound, l.MaxMs, onTimeEnded)
	return nil
}
