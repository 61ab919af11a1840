package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Latency summarises a set of latencies. Every sample of these bounded
// runs is kept and sorted, so the quantiles are exact.
type Latency struct {
	Count int     `json:"count"`
	MinMs float64 `json:"min_ms"`
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P99Ms float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	MaxMs float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// summarize sorts ns (nanoseconds) in place and summarises it.
func summarize(ns []int64) Latency {
	if len(ns) == 0 {
		return Latency{}
	}
	slices.Sort(ns)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ns)))) - 1
		i = max(0, min(i, len(ns)-1))
		return ms(ns[i])
	}
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	return Latency{
		Count: len(ns),
		MinMs: ms(ns[0]),
		P50Ms: q(0.50),
		P90Ms: q(0.90),
		P99Ms: q(0.99),
		P999:  q(0.999),
		MaxMs: ms(ns[len(ns)-1]),
		Mean:  round3(sum / float64(len(ns)) / 1e6),
	}
}

func ms(ns int64) float64 { return round3(float64(ns) / 1e6) }

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func (l Latency) String() string {
	return fmt.Sprintf("n=%d p50=%.3fms p99=%.3fms p999=%.3fms max=%.3fms", l.Count, l.P50Ms, l.P99Ms, l.P999, l.MaxMs)
}

// cpuMark is this process's CPU time at one moment.
type cpuMark struct {
	at         time.Time
	user, syst time.Duration
}

func cpuNow() cpuMark {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return cpuMark{
		at:   time.Now(),
		user: time.Duration(ru.Utime.Nano()),
		syst: time.Duration(ru.Stime.Nano()),
	}
}

// CPU is the bench process's own CPU use over a phase.
type CPU struct {
	WallSec float64 `json:"wall_s"`
	UserSec float64 `json:"user_s"`
	SysSec  float64 `json:"sys_s"`
	// Cores is (user+sys)/wall: 1.0 is one core fully busy.
	Cores float64 `json:"cores"`
	// Limited is set when the tool used nearly all the CPUs it may run on:
	// the figure beside it may measure the tool, not the server.
	Limited bool `json:"tool_limited"`
}

// toolCPUs is how many CPUs the bench may use (its affinity and GOMAXPROCS).
func toolCPUs() int { return max(1, min(runtime.NumCPU(), runtime.GOMAXPROCS(0))) }

func cpuSince(m cpuMark) CPU {
	n := cpuNow()
	wall := n.at.Sub(m.at).Seconds()
	c := CPU{
		WallSec: round3(wall),
		UserSec: round3((n.user - m.user).Seconds()),
		SysSec:  round3((n.syst - m.syst).Seconds()),
	}
	if wall > 0 {
		c.Cores = round3((c.UserSec + c.SysSec) / wall)
	}
	c.Limited = c.Cores >= 0.85*float64(toolCPUs())
	return c
}

// systemBusy returns the CPU seconds every process has used, from the
// first line of /proc/stat (all but idle and iowait), or -1.
func systemBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return -1
	}
	var busy float64
	for i, v := range f[1:] {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return -1
		}
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already in user
			break
		}
		busy += x
	}
	return busy / clockTicks
}

// loadAvg is the 1-minute load average, or -1.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// progress writes timestamped lines to stderr while the bench works.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	name  string
}

func newProgress(w io.Writer, name string) *progress {
	return &progress{w: w, start: time.Now(), name: name}
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%s %6.1fs] %s\n", p.name, time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// every prints line() every d until the returned stop is called; stop
// waits for the printer to end.
func (p *progress) every(d time.Duration, line func() string) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				p.printf("%s", line())
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// sleepUntil sleeps until t or until done is closed; it reports whether t
// was reached.
func sleepUntil(t time.Time, done <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-done:
		return false
	}
}

// writeSeries writes one CSV line per push index in xs: the index, its
// scheduled time (push 0 at start, period apart) as an offset and as unix
// seconds (to line it up with other logs, such as bench/episodes.py's),
// how many receipts, and their p50, p99 and max latency in ms, whole and
// up to sent_at.
func writeSeries(path string, xs []sample, start time.Time, period time.Duration) error {
	byIdx := map[int64][]sample{}
	for _, x := range xs {
		byIdx[x.idx] = append(byIdx[x.idx], x)
	}
	idxs := slices.Sorted(maps.Keys(byIdx))
	var b strings.Builder
	b.WriteString("idx,offset_s,n,p50_ms,p99_ms,max_ms,to_server_p50_ms,to_server_max_ms,sched_unix_s\n")
	for _, i := range idxs {
		ss := byIdx[i]
		tot, srv := summarize(totalsOf(ss)), summarize(toServerOf(ss))
		off := time.Duration(i) * period
		fmt.Fprintf(&b, "%d,%.3f,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.6f\n", i, off.Seconds(), len(ss),
			tot.P50Ms, tot.P99Ms, tot.MaxMs, srv.P50Ms, srv.MaxMs, float64(start.Add(off).UnixNano())/1e9)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
