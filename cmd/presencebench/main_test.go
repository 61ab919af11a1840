package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runReport runs presencebench with args plus --out, and returns the
// report and the printed table.
func runReport(t *testing.T, args ...string) (*Report, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	args = append(args, "--out", out, "--deadline", "40s")
	if err := run(args, &stdout, &stderr); err != nil {
		t.Fatalf("presencebench %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	r := new(Report)
	if err := json.Unmarshal(b, r); err != nil {
		t.Fatalf("report: %v", err)
	}
	return r, stdout.String()
}

// runBench is runReport for an in-process run, which must say so.
func runBench(t *testing.T, args ...string) *Report {
	t.Helper()
	r, table := runReport(t, args...)
	if !r.InProcess || r.Error != "" {
		t.Fatalf("report inprocess=%v error=%q", r.InProcess, r.Error)
	}
	if !strings.Contains(table, "IN-PROCESS") {
		t.Errorf("table does not mark the run as in-process:\n%s", table)
	}
	return r
}

func metricOf(t *testing.T, r *Report, name string) float64 {
	t.Helper()
	for _, m := range r.Metrics {
		if m.Name == name {
			return m.Value
		}
	}
	t.Fatalf("%s report has no metric %q", r.Scenario, name)
	return 0
}

// readSeries reads a --series CSV: its rows after the header, split.
func readSeries(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if !strings.HasPrefix(lines[0], "idx,offset_s,n,p50_ms,") {
		t.Fatalf("series header %q", lines[0])
	}
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Split(l, ","))
	}
	return rows
}

func checkPassed(t *testing.T, r *Report, prefix string) {
	t.Helper()
	for _, c := range r.Checks {
		if strings.HasPrefix(c.Name, prefix) {
			if !c.Pass {
				t.Errorf("check %q: got %s; want %s", c.Name, c.Got, c.Target)
			}
			return
		}
	}
	t.Errorf("%s report has no check %q", r.Scenario, prefix)
}

// TestScenariosInProcess runs every scenario at a tiny size against an
// in-process server and checks that each measures what it claims: it is
// the tool's own end-to-end test, not a benchmark.
func TestScenariosInProcess(t *testing.T) {
	// idle and fanout run alone, before the parallel ones start: idle
	// counts the process's goroutines, and fanout's saturation phase is
	// bounded in time, so neither may share the process or the CPU.
	t.Run("idle", func(t *testing.T) {
		r := runBench(t, "--inprocess", "--scenario", "idle", "--sessions", "20", "--settle", "300ms")
		if got := metricOf(t, r, "sessions.live"); got != 20 {
			t.Errorf("sessions.live = %v; want 20", got)
		}
		if got := metricOf(t, r, "goroutines.per_session"); got <= 0 {
			t.Errorf("goroutines.per_session = %v; want > 0", got)
		}
	})
	t.Run("idle multiplexed", func(t *testing.T) {
		t.Parallel()
		r := runBench(t, "--inprocess", "--scenario", "idle", "--sessions", "20", "--streams-per-conn", "5", "--settle", "300ms")
		if r.Variant != "sessions=20 conns=4 streams/conn=5" {
			t.Errorf("variant = %q", r.Variant)
		}
	})
	t.Run("fanout", func(t *testing.T) {
		r := runBench(t, "--inprocess", "--scenario", "fanout", "--sessions", "20", "--rate", "20", "--duration", "1s", "--count", "40", "--window", "4")
		if got := metricOf(t, r, "fixed.deliveries"); got != 20*20 {
			t.Errorf("fixed.deliveries = %v; want 400", got)
		}
		if got := metricOf(t, r, "saturation.deliveries"); got != 20*40 {
			t.Errorf("saturation.deliveries = %v; want 800", got)
		}
		checkPassed(t, r, "fanout saturated: no eviction")
		// From two scrapes of the server's /metrics: the phase allocated
		// (every delivery and Ping does) and GCs were counted, if none.
		if got := metricOf(t, r, "fixed.server_alloc_mb_per_s"); got <= 0 {
			t.Errorf("fixed.server_alloc_mb_per_s = %v; want > 0", got)
		}
		if got := metricOf(t, r, "fixed.server_allocs_per_delivery"); got <= 0 {
			t.Errorf("fixed.server_allocs_per_delivery = %v; want > 0", got)
		}
		if got := metricOf(t, r, "fixed.server_gcs"); got < 0 {
			t.Errorf("fixed.server_gcs = %v; want >= 0", got)
		}
	})
	// The raw client (--client raw) in the same shapes: every broadcast
	// reaches every session, none is evicted, latencies are sampled.
	for _, per := range []string{"1", "5"} {
		t.Run("fanout raw streams/conn="+per, func(t *testing.T) {
			series := filepath.Join(t.TempDir(), "series.csv")
			r, table := runReport(t, "--inprocess", "--client", "raw", "--scenario", "fanout", "--sessions", "20", "--streams-per-conn", per,
				"--rate", "20", "--duration", "1s", "--count", "40", "--window", "4", "--series", series)
			checkRawReport(t, r, table)
			// A line per broadcast of the fixed phase, each received by
			// all 20 sessions, 50 ms apart.
			rows := readSeries(t, series)
			if len(rows) != 20 {
				t.Fatalf("series has %d broadcasts; want 20", len(rows))
			}
			for i, row := range rows {
				if off, err := strconv.ParseFloat(row[1], 64); row[0] != strconv.Itoa(i) || row[2] != "20" || err != nil || math.Abs(off-float64(i)*0.05) > 1e-6 {
					t.Errorf("series line %d: idx %s, offset %s s, %s receipts; want idx %d, %.2f s, 20", i, row[0], row[1], row[2], i, float64(i)*0.05)
				}
			}
			if got := metricOf(t, r, "fixed.deliveries"); got != 20*20 {
				t.Errorf("fixed.deliveries = %v; want 400", got)
			}
			if got := metricOf(t, r, "saturation.deliveries"); got != 20*40 {
				t.Errorf("saturation.deliveries = %v; want 800", got)
			}
			// --quickack (the default) set TCP_QUICKACK on every
			// connection before the fixed phase.
			nconns, _ := strconv.Atoi(per)
			nconns = 20 / nconns
			if runtime.GOOS == "linux" && fmt.Sprint(r.Detail["quickack_conns"]) != strconv.Itoa(nconns) {
				t.Errorf("quickack_conns = %v; want %d", r.Detail["quickack_conns"], nconns)
			}
			if got := metricOf(t, r, "evicted"); got != 0 {
				t.Errorf("evicted = %v; want 0", got)
			}
			checkPassed(t, r, "fanout saturated: no eviction")
			if l := r.Latencies["fixed.latency"]; l.Count != 20*20 {
				t.Errorf("fixed.latency count = %d; want 400", l.Count)
			}
			if l := r.Latencies["saturation.latency"]; l.Count != 20*40 || l.MaxMs <= 0 {
				t.Errorf("saturation.latency count = %d, max %v ms; want 800 samples", l.Count, l.MaxMs)
			}
			if len(r.Ends) != 0 {
				t.Errorf("sessions ended during the run: %v", r.Ends)
			}
		})
		t.Run("idle raw streams/conn="+per, func(t *testing.T) {
			r, table := runReport(t, "--inprocess", "--client", "raw", "--scenario", "idle", "--sessions", "20", "--streams-per-conn", per,
				"--settle", "300ms")
			checkRawReport(t, r, table)
			if got := metricOf(t, r, "sessions.live"); got != 20 {
				t.Errorf("sessions.live = %v; want 20", got)
			}
		})
	}
	t.Run("unicast", func(t *testing.T) {
		t.Parallel()
		series := filepath.Join(t.TempDir(), "series.csv")
		r := runBench(t, "--inprocess", "--scenario", "unicast", "--sessions", "20", "--rate", "100", "--duration", "1s", "--series", series)
		pushes, acc, recv := metricOf(t, r, "pushes"), metricOf(t, r, "accepted"), metricOf(t, r, "received")
		if pushes != 100 || acc != pushes || recv != acc {
			t.Errorf("pushes/accepted/received = %v/%v/%v; want 100 each", pushes, acc, recv)
		}
		// A line per push, each received by its one session, in order.
		rows := readSeries(t, series)
		if len(rows) != 100 {
			t.Fatalf("series has %d pushes; want 100", len(rows))
		}
		t0, _ := strconv.ParseFloat(rows[0][8], 64)
		for i, row := range rows {
			if row[0] != strconv.Itoa(i) || row[2] != "1" {
				t.Errorf("series line %d: idx %s, %s receipts; want idx %d, 1", i, row[0], row[2], i)
			}
			// Push i is scheduled i/100 s after push 0, in unix seconds.
			if at, err := strconv.ParseFloat(row[8], 64); err != nil || math.Abs(at-t0-float64(i)/100) > 1e-4 {
				t.Errorf("series line %d: sched_unix_s %s; want %.6f", i, row[8], t0+float64(i)/100)
			}
		}
		if now := float64(time.Now().UnixNano()) / 1e9; t0 > now || t0 < now-60 {
			t.Errorf("series: push 0 scheduled at unix %.3f; want within the last minute (now %.3f)", t0, now)
		}
	})
	t.Run("silent", func(t *testing.T) {
		t.Parallel()
		r := runBench(t, "--inprocess", "--scenario", "silent", "--sessions", "20", "--silent-frac", "0.25",
			"--srv-heartbeat-interval", "500ms", "--srv-heartbeat-timeout", "1500ms", "--srv-reap-interval", "250ms", "--duration", "3s")
		checkPassed(t, r, "silent: every silent client evicted")
		checkPassed(t, r, "silent: no eviction before the timeout")
		checkPassed(t, r, "silent: on-time clients survive")
	})
	t.Run("silent raw", func(t *testing.T) {
		t.Parallel()
		// The raw client's connection heartbeat honours session.silent.
		r, table := runReport(t, "--inprocess", "--client", "raw", "--scenario", "silent", "--sessions", "20", "--streams-per-conn", "5", "--silent-frac", "0.25",
			"--srv-heartbeat-interval", "500ms", "--srv-heartbeat-timeout", "1500ms", "--srv-reap-interval", "250ms", "--duration", "3s")
		checkRawReport(t, r, table)
		checkPassed(t, r, "silent: every silent client evicted")
		checkPassed(t, r, "silent: no eviction before the timeout")
		checkPassed(t, r, "silent: on-time clients survive")
	})
	t.Run("unicast raw", func(t *testing.T) {
		t.Parallel()
		r, table := runReport(t, "--inprocess", "--client", "raw", "--scenario", "unicast", "--sessions", "20", "--streams-per-conn", "10", "--rate", "100", "--duration", "1s")
		checkRawReport(t, r, table)
		if recv := metricOf(t, r, "received"); recv != 100 {
			t.Errorf("received = %v; want 100", recv)
		}
	})
	t.Run("slow", func(t *testing.T) {
		t.Parallel()
		// The default queue (256 frames): a smaller one would also end
		// reading sessions that fall behind under -race.
		r := runBench(t, "--inprocess", "--scenario", "slow", "--sessions", "20", "--slow-frac", "0.1", "--rate", "150",
			"--settle", "300ms", "--baseline", "500ms", "--duration", "10s")
		checkPassed(t, r, "slow: every stalled client ended")
		if got := metricOf(t, r, "others.ended"); got != 0 {
			t.Errorf("others.ended = %v; want 0", got)
		}
		// The baseline starts after the warm-up: 0.5 s at 150/s.
		if got := r.Latencies["others.baseline"].Count; got < 18*70 || got > 18*80 {
			t.Errorf("the baseline has %d samples; want the 18 reading sessions x about 75 pushes (0.5 s at 150/s), the warm-up's left out", got)
		}
		if got := metricOf(t, r, "others.p99_ratio_after"); got <= 0 {
			t.Errorf("others.p99_ratio_after = %v; want the with-stalled p99 over the after-phase's", got)
		}
	})
	t.Run("slow raw", func(t *testing.T) {
		t.Parallel()
		// The reading sessions on the raw client, the stalled ones on
		// grpc-go's: every stalled one ends, no reading one does, and the
		// reading ones' pushes were timed.
		r, table := runReport(t, "--inprocess", "--client", "raw", "--scenario", "slow", "--sessions", "20", "--slow-frac", "0.1", "--rate", "150",
			"--settle", "300ms", "--baseline", "500ms", "--duration", "10s")
		checkRawReport(t, r, table)
		checkPassed(t, r, "slow: every stalled client ended")
		if got := metricOf(t, r, "others.ended"); got != 0 {
			t.Errorf("others.ended = %v; want 0", got)
		}
		if got := metricOf(t, r, "others.baseline.p50"); got <= 0 {
			t.Errorf("others.baseline.p50 = %v ms; want the raw sessions' pushes timed", got)
		}
	})
	t.Run("slow control", func(t *testing.T) {
		t.Parallel()
		// The control run: the sessions chosen to stall keep reading, so
		// none is ended, the stall phase runs its whole --duration, and
		// the series has a line per broadcast received by all 18.
		series := filepath.Join(t.TempDir(), "series.csv")
		r := runBench(t, "--inprocess", "--scenario", "slow", "--sessions", "20", "--slow-frac", "0.1", "--rate", "100",
			"--settle", "200ms", "--baseline", "500ms", "--duration", "1s", "--slow-control", "--series", series)
		if !strings.Contains(r.Variant, "control") {
			t.Errorf("variant %q does not say the run is a control", r.Variant)
		}
		if got := metricOf(t, r, "stalled.time_to_end_all"); got != -1 {
			t.Errorf("stalled.time_to_end_all = %v; want -1: no session stalled, so none was ended", got)
		}
		if got := metricOf(t, r, "stalled.resource_exhausted"); got != 0 {
			t.Errorf("stalled.resource_exhausted = %v; want 0", got)
		}
		if got := r.Latencies["others.with_stalled"].Count; got < 18*80 {
			t.Errorf("the second phase has %d samples; want its whole second at 100/s to the 18 reading sessions", got)
		}
		rows := readSeries(t, series)
		if len(rows) < 100 {
			t.Fatalf("series: %d broadcasts; want a line per measured broadcast", len(rows))
		}
		full := 0
		for _, row := range rows {
			if row[2] == "18" {
				full++
			}
		}
		if full < len(rows)*9/10 {
			t.Errorf("series: %d of %d broadcasts were received by all 18 reading sessions; want nearly all", full, len(rows))
		}
	})
	t.Run("churn", func(t *testing.T) {
		t.Parallel()
		r := runBench(t, "--inprocess", "--scenario", "churn", "--workers", "4", "--count", "200", "--duration", "2s")
		if got := metricOf(t, r, "sessions"); got < 1 {
			t.Errorf("sessions = %v; want > 0", got)
		}
		if got := metricOf(t, r, "heap_live.before"); got <= 0 {
			t.Errorf("heap_live.before = %v MiB; want the server's go_gc_heap_live_bytes", got)
		}
	})
	t.Run("churn raw", func(t *testing.T) {
		t.Parallel()
		// Each cycle on a connection of its own, read by the cycle's
		// goroutine: every one must end with the server's OK.
		r, table := runReport(t, "--inprocess", "--scenario", "churn", "--client", "raw", "--workers", "4", "--count", "200", "--duration", "2s")
		checkRawReport(t, r, table)
		if got := metricOf(t, r, "sessions"); got < 1 {
			t.Errorf("sessions = %v; want > 0", got)
		}
		for _, m := range r.Metrics {
			if m.Name == "sessions" && m.Note != "failures map[]" {
				t.Errorf("sessions: %s; want no failures", m.Note)
			}
		}
	})
}

// checkRawReport checks that an in-process run says it used the raw client.
func checkRawReport(t *testing.T, r *Report, table string) {
	t.Helper()
	if !r.InProcess || r.Error != "" {
		t.Fatalf("report inprocess=%v error=%q", r.InProcess, r.Error)
	}
	if r.Machine.Client != "raw" || !strings.HasSuffix(r.Variant, " client-raw") {
		t.Errorf("report client = %q, variant %q; want raw", r.Machine.Client, r.Variant)
	}
	if !regexp.MustCompile(`(?m)^client +raw\b`).MatchString(table) {
		t.Errorf("table header does not name the client:\n%s", table)
	}
}

// TestClientFlag checks --client's values and the scenarios raw refuses.
func TestClientFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // in the error; "" for none
	}{
		{[]string{"--scenario", "fanout", "--client", "raw"}, ""},
		{[]string{"--scenario", "idle", "--client", "raw"}, ""},
		{[]string{"--scenario", "fanout"}, ""},
		{[]string{"--scenario", "fanout", "--client", "quic"}, "want grpc or raw"},
		{[]string{"--scenario", "slow", "--client", "raw"}, ""},
		{[]string{"--scenario", "churn", "--client", "raw"}, ""},
		{[]string{"--scenario", "churn", "--client", "raw", "--churn-new-conn=false"}, "--churn-new-conn=false needs --client grpc"},
		{[]string{"--scenario", "cluster", "--client", "raw"}, "does not support --scenario cluster"},
		{[]string{"--scenario", "fanout", "--client", "raw", "--client-bdp"}, "--client-bdp"},
	} {
		cfg, _, err := parseFlags(c.args, io.Discard)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.want == "" && cfg.client == "":
			t.Errorf("%v: no client set", c.args)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: error %v; want one with %q", c.args, err, c.want)
		}
	}
}

// TestRefusesNonLoopback proves the tool will not run against an address
// outside 127.0.0.0/8.
func TestRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"10.0.0.1:9090", "example.invalid:9090", "[::1]:9090"} {
		var stdout, stderr bytes.Buffer
		err := run([]string{"--scenario", "idle", "--grpc-addr", addr, "--deadline", "5s"}, &stdout, &stderr)
		if err == nil {
			t.Errorf("run with --grpc-addr %s = nil; want a refusal", addr)
		}
	}
	var stdout, stderr bytes.Buffer
	err := run([]string{"--scenario", "idle", "--http-addr", "192.0.2.1:80", "--deadline", "5s"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("run with --http-addr 192.0.2.1:80 = %v; want a loopback refusal", err)
	}
}
