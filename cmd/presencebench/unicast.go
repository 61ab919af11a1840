package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runUnicast opens N sessions and pushes to random uids over REST
// (POST /v1/uids/{uid}/messages) at a fixed rate, open loop: push k is due
// at start+k/rate and its payload carries that scheduled time, so latency
// is scheduled send -> client receipt and a slow response cannot delay the
// pushes after it (no coordinated omission). The server's Push.sent_at
// splits each latency into the part before the server accepted the push
// (HTTP, gateway, gRPC hop) and the part after (queue, writer, wire, client).
func runUnicast(ctx context.Context, e *env) error {
	cfg, rep := e.cfg, e.rep
	n := orDefault(cfg.sessions, 10000)
	nconns, per := cfg.connLayout(n)
	rate := orDefault(cfg.rate, 500)
	dur := orDefault(cfg.duration, 20*time.Second)
	workers := orDefault(cfg.workers, 64)
	count := max(1, int(rate*dur.Seconds()))
	rep.Variant = fmt.Sprintf("sessions=%d conns=%d streams/conn=%d rate=%.0f/s", n, nconns, per, rate)

	var received atomic.Int64
	conns, err := dialClients(e.t, cfg.client, nconns, 1)
	if err != nil {
		return err
	}
	defer conns.close()
	var ended atomic.Int64
	sessions, _, err := openSessions(ctx, sessionSpec{
		n: n, conns: conns, prefix: e.runID, parallel: cfg.dialParallel,
		onPush: func(s *session, f *frameInfo, now int64) {
			if f.t > 0 {
				received.Add(1)
				s.record(sample{idx: f.idx, total: now - f.t, toSrv: f.sentAt - f.t})
			}
		},
		onEnd: func(*session) { ended.Add(1) },
	}, e.pr)
	defer closeSessions(sessions, 10*time.Second)
	if err != nil {
		return err
	}
	rep.Target.HeartbeatInterval, rep.Target.HeartbeatTimeout = sessions[0].hbInterval.String(), sessions[0].hbTimeout.String()

	// The uids are drawn up front so the scheduler does nothing but wait.
	rng := rand.New(rand.NewPCG(cfg.seed, 0x5eed))
	uids := make([]string, count)
	for i := range uids {
		uids[i] = sessions[rng.IntN(len(sessions))].uid
	}
	url := func(uid string) string { return "http://" + e.t.httpAddr + "/v1/uids/" + uid + "/messages" }

	var mu sync.Mutex
	codes := map[string]int{}
	var respLat []int64
	var ok atomic.Int64
	// written[k]: when push k's request was all written to its socket,
	// relative to its schedule (0: not written). The HTTP client's write
	// loop sets it, hence atomics.
	written := make([]atomic.Int64, count)
	push := func(k int, sched time.Time, measured bool) {
		t := "0" // warm-up pushes are not measured
		if measured {
			t = strconv.FormatInt(sched.UnixNano(), 10)
		}
		body := `{"data":{"t":"` + t + `","i":"` + strconv.Itoa(k) + `"}}`
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url(uids[k%len(uids)]), strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		if measured {
			req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { written[k].Store(max(1, time.Since(sched).Nanoseconds())) },
			}))
		}
		resp, err := e.t.http.Do(req)
		key := ""
		if err != nil {
			key = "error"
		} else {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			key = strconv.Itoa(resp.StatusCode)
		}
		if !measured {
			return
		}
		if key == "200" {
			ok.Add(1)
		}
		d := time.Since(sched).Nanoseconds()
		mu.Lock()
		codes[key]++
		respLat = append(respLat, d)
		mu.Unlock()
	}

	// Warm-up: open the HTTP connections and wake every path once.
	warm := min(count, int(rate/2)+1)
	openLoop(warm, rate, workers, time.Now(), ctx.Done(), nil, func(k int, sched time.Time) { push(k, sched, false) })

	e.pr.printf("unicast: %d pushes at %.0f/s over REST to random uids of %d sessions", count, rate, len(sessions))
	stop := e.pr.every(time.Second, func() string {
		return fmt.Sprintf("unicast: %d accepted, %d received, %d sessions ended", ok.Load(), received.Load(), ended.Load())
	})
	srv0, cpu0 := e.t.cpuSeconds(ctx), cpuNow()
	start := time.Now().Add(10 * time.Millisecond)
	lag, issued := openLoop(count, rate, workers, start, ctx.Done(), nil, func(k int, sched time.Time) { push(k, sched, true) })
	// Wait for the last pushes to arrive.
	for wait := time.Now().Add(3 * time.Second); received.Load() < ok.Load() && time.Now().Before(wait); {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	cpu := cpuSince(cpu0)
	srv := e.t.cpuSeconds(ctx) - srv0

	samples := collect(sessions, nil)
	if cfg.seriesOut != "" {
		if err := writeSeries(cfg.seriesOut, samples, start, time.Duration(float64(time.Second)/rate)); err != nil {
			return err
		}
	}
	total := make([]int64, len(samples))
	toSrv := make([]int64, len(samples))
	fromSrv := make([]int64, len(samples))
	fromSend := make([]int64, 0, len(samples))
	var sendOut, sendIn []int64 // split of toSrv at the moment the request was written
	for i, x := range samples {
		total[i], toSrv[i], fromSrv[i] = x.total, x.toSrv, x.total-x.toSrv
		if x.idx >= 0 && x.idx < int64(len(lag)) {
			fromSend = append(fromSend, x.total-lag[x.idx])
		}
		if x.idx >= 0 && x.idx < int64(len(written)) {
			if w := written[x.idx].Load(); w > 0 {
				sendOut = append(sendOut, w)
				sendIn = append(sendIn, x.toSrv-w)
			}
		}
	}
	l := summarize(total)
	rep.metric("pushes", float64(issued), "", fmt.Sprintf("offered %.0f/s for %v", rate, dur))
	rep.metric("accepted", float64(ok.Load()), "", fmt.Sprintf("HTTP statuses %v", codes))
	rep.metric("received", float64(received.Load()), "", fmt.Sprintf("missing %d", ok.Load()-received.Load()))
	rep.metric("achieved_rate", float64(issued)/cpu.WallSec, "pushes/s", "")
	rep.latency("latency", l)
	rep.latency("latency.from_actual_send", summarize(fromSend))
	rep.latency("latency.to_server_accept", summarize(toSrv))
	// The two sides of to_server_accept: the tool (start its goroutine,
	// take a connection, write the request) and what follows the write
	// (loopback, the server's HTTP read, the gateway, up to SendToUid).
	rep.latency("latency.to_request_written", summarize(sendOut))
	rep.latency("latency.written_to_server_accept", summarize(sendIn))
	rep.latency("latency.server_to_client", summarize(fromSrv))
	rep.latency("http_response", summarize(respLat))
	tl := summarize(lag)
	rep.latency("tool_lag", tl)
	if srv > 0 && ok.Load() > 0 {
		rep.metric("server_cpu_per_push", srv/float64(ok.Load())*1e6, "µs", "server CPU over the run / accepted pushes (includes heartbeats and the REST gateway)")
	}
	rep.cpu("run", cpu)
	rep.serverCPU("run", srv, cpu.WallSec)
	rep.check(fmt.Sprintf("unicast %.0f/s p50", rate), "<= 0.5 ms", fmt.Sprintf("%.3f ms", l.P50Ms), l.P50Ms <= 0.5 && l.Count > 0)
	rep.check(fmt.Sprintf("unicast %.0f/s p99", rate), "<= 2 ms", fmt.Sprintf("%.3f ms", l.P99Ms), l.P99Ms <= 2 && l.Count > 0)
	if tl.P99Ms > 0.2*l.P99Ms {
		rep.note("the tool's own scheduling lag (p99 %.3f ms) is a sizeable part of the p99 latency; it is included in the latency (open loop)", tl.P99Ms)
	}
	rep.Ends = endTally(sessions)
	e.pr.printf("unicast: %s", l)
	return nil
}
