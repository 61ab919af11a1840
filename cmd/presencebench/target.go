package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/presence-dev/presence/daemon"
	"github.com/presence-dev/presence/server"
)

// target is the server under test: an external presenced (addresses and
// optionally its pid) or a daemon started in this process.
type target struct {
	grpcAddr string // IPv4 loopback literal
	httpAddr string // IPv4 loopback literal
	pid      int    // 0: unknown; RSS and CPU then come from /metrics
	inproc   *daemon.Daemon
	srcAddrs int // client source addresses to spread over
	http     *http.Client
	// staticWindow sets every client's HTTP/2 windows (64 KiB), which
	// turns grpc-go's BDP estimation off (--client-bdp=false).
	staticWindow bool
}

// newTarget checks the addresses and builds the HTTP client.
func newTarget(ctx context.Context, cfg *config) (*target, error) {
	t := &target{pid: cfg.serverPID, srcAddrs: cfg.sourceAddrs, staticWindow: !cfg.clientBDP}
	if cfg.inprocess {
		log := slog.New(slog.DiscardHandler)
		if cfg.srv.logLevel == "info" {
			log = slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
		d, err := startDaemon(cfg, "127.0.0.1:0", "127.0.0.1:0", log)
		if err != nil {
			return nil, err
		}
		t.inproc = d
		t.grpcAddr, t.httpAddr, t.pid = d.GRPCAddr(), d.HTTPAddr(), os.Getpid()
	} else {
		var err error
		if t.grpcAddr, err = loopbackAddr(ctx, "grpc-addr", cfg.grpcAddr); err != nil {
			return nil, err
		}
		if t.httpAddr, err = loopbackAddr(ctx, "http-addr", cfg.httpAddr); err != nil {
			return nil, err
		}
	}
	return t.finish()
}

// externalTarget is one external presenced: its addresses are checked and
// resolved to 127.0.0.0/8 literals.
func externalTarget(ctx context.Context, what, grpcAddr, httpAddr string, pid, srcAddrs int) (*target, error) {
	t := &target{pid: pid, srcAddrs: srcAddrs}
	var err error
	if t.grpcAddr, err = loopbackAddr(ctx, what, grpcAddr); err != nil {
		return nil, err
	}
	if t.httpAddr, err = loopbackAddr(ctx, what, httpAddr); err != nil {
		return nil, err
	}
	return t.finish()
}

// finish checks the resolved addresses and builds the HTTP client.
func (t *target) finish() (*target, error) {
	if !isLoopback4(t.grpcAddr) || !isLoopback4(t.httpAddr) {
		return nil, fmt.Errorf("server addresses %s, %s are not IPv4 loopback", t.grpcAddr, t.httpAddr)
	}
	dial := loopbackDialer(nil)
	t.http = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
	return t, nil
}

// startDaemon starts a presence daemon in this process with the --srv-*
// settings (in-process mode and --serve).
func startDaemon(cfg *config, grpcAddr, httpAddr string, log *slog.Logger) (*daemon.Daemon, error) {
	return daemon.Start(daemon.Config{
		GRPCAddr: grpcAddr,
		HTTPAddr: httpAddr,
		Server: server.Options{
			HeartbeatInterval: cfg.srv.heartbeatInterval,
			HeartbeatTimeout:  cfg.srv.heartbeatTimeout,
			ReapInterval:      cfg.srv.reapInterval,
			QueueMaxMessages:  cfg.srv.queueMaxMessages,
			QueueMaxBytes:     cfg.srv.queueMaxBytes,
		},
		ReadBufferSize:        cfg.srv.readBuffer,
		Transport:             cfg.srv.transport,
		WriteBufferSize:       cfg.srv.writeBuffer,
		InitialWindowSize:     int32(cfg.srv.initialWindow),
		InitialConnWindowSize: int32(cfg.srv.initialConnWindow),
		Logger:                log,
	})
}

// close stops an in-process daemon.
func (t *target) close() {
	t.http.CloseIdleConnections()
	if t.inproc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		t.inproc.Shutdown(ctx)
	}
}

// newConn returns a client connection to the gRPC listener from the i-th
// source address. smallWindow pins the stream and connection windows at
// 64 KiB (no BDP growth), so a client that stops reading fills them fast.
func (t *target) newConn(i int, smallWindow bool) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(loopbackDialer(sourceIP(i, t.srcAddrs))),
	}
	if smallWindow || t.staticWindow {
		// A set window turns grpc-go's BDP estimation off: no ping to
		// the server after each burst of data it sends.
		opts = append(opts, grpc.WithInitialWindowSize(65535), grpc.WithInitialConnWindowSize(65535))
	}
	// passthrough: the address is a literal; no resolver goroutine per conn.
	return grpc.NewClient("passthrough:///"+t.grpcAddr, opts...)
}

// metrics scrapes /metrics into name (with labels, as written) -> value.
func (t *target) metrics(ctx context.Context) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	// Uncompressed: Go's client would ask for gzip, and the server would
	// then build a compressor per scrape, hundreds of KiB of garbage that
	// the measurements of its heap and CPU would count.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := t.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("scraping /metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format: "name{labels} value".
func parseMetrics(r io.Reader) (map[string]float64, error) {
	m := make(map[string]float64, 128)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		end := bytes.IndexByte(line, ' ')
		if i := bytes.IndexByte(line, '}'); i >= 0 && bytes.IndexByte(line, '{') < end {
			end = i + 1
		}
		if end <= 0 || end >= len(line) {
			continue
		}
		fields := strings.Fields(string(line[end:]))
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		m[string(line[:end])] = v
	}
	return m, sc.Err()
}

// serverSample is the server's state at one moment.
type serverSample struct {
	at         time.Time
	goroutines float64 // go_goroutines
	heapInuse  float64 // go_memstats_heap_inuse_bytes
	heapAlloc  float64 // go_memstats_heap_alloc_bytes: live objects (and not yet swept)
	heapLive   float64 // go_gc_heap_live_bytes: marked live by the last GC; -1 if not exported
	stackInuse float64 // go_memstats_stack_inuse_bytes
	gcCount    float64 // go_gc_duration_seconds_count
	allocBytes float64 // go_memstats_alloc_bytes_total: allocated since start
	mallocs    float64 // go_memstats_mallocs_total: objects allocated since start
	sessions   float64 // presence_sessions if the server exports it, else -1
	rss        float64 // bytes: /proc/<pid>/status VmRSS, else process_resident_memory_bytes
	cpu        float64 // seconds of CPU: /proc/<pid>/stat, else process_cpu_seconds_total
}

// sample reads the server's metrics, RSS and CPU.
func (t *target) sample(ctx context.Context) (serverSample, error) {
	s := serverSample{at: time.Now(), sessions: -1, rss: -1, cpu: -1, heapLive: -1}
	m, err := t.metrics(ctx)
	if err != nil {
		return s, err
	}
	s.goroutines = m["go_goroutines"]
	s.heapInuse = m["go_memstats_heap_inuse_bytes"]
	s.heapAlloc = m["go_memstats_heap_alloc_bytes"]
	s.stackInuse = m["go_memstats_stack_inuse_bytes"]
	s.gcCount = m["go_gc_duration_seconds_count"]
	s.allocBytes = m["go_memstats_alloc_bytes_total"]
	s.mallocs = m["go_memstats_mallocs_total"]
	if v, ok := m["go_gc_heap_live_bytes"]; ok {
		s.heapLive = v
	}
	if v, ok := m["presence_sessions"]; ok {
		s.sessions = v
	}
	if v, ok := m["process_resident_memory_bytes"]; ok {
		s.rss = v
	}
	if v, ok := m["process_cpu_seconds_total"]; ok {
		s.cpu = v
	}
	if t.pid > 0 {
		if rss, err := readRSS(t.pid); err == nil {
			s.rss = rss
		}
		if cpu, err := readProcCPU(t.pid); err == nil {
			s.cpu = cpu
		}
	}
	return s, nil
}

// rss returns the server's resident set in bytes, or -1.
func (t *target) rss(ctx context.Context) float64 {
	if t.pid > 0 {
		if v, err := readRSS(t.pid); err == nil {
			return v
		}
	}
	if m, err := t.metrics(ctx); err == nil {
		if v, ok := m["process_resident_memory_bytes"]; ok {
			return v
		}
	}
	return -1
}

// cpuSeconds returns the server's CPU time so far, or -1.
func (t *target) cpuSeconds(ctx context.Context) float64 {
	if t.pid > 0 {
		if v, err := readProcCPU(t.pid); err == nil {
			return v
		}
	}
	if m, err := t.metrics(ctx); err == nil {
		if v, ok := m["process_cpu_seconds_total"]; ok {
			return v
		}
	}
	return -1
}

// serverCPUs is how many CPUs the server may run on (its affinity), or 0.
func (t *target) serverCPUs() int {
	if l := t.cpuList(); l != "" {
		return countCPUList(l)
	}
	return 0
}

// cpuList is the server's affinity as a list like "0-1,4", or "".
func (t *target) cpuList() string {
	if t.pid <= 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", t.pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// countCPUList counts the CPUs in a list like "0-1,4".
func countCPUList(s string) int { return len(expandCPUList(s)) }

// readRSS returns VmRSS of pid in bytes.
func readRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// readProcCPU returns utime+stime of pid in seconds.
func readProcCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields resume after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64) // field 14
	st, err2 := strconv.ParseFloat(f[12], 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return (ut + st) / clockTicks, nil
}

// waitGC returns once the server has completed at least one more GC cycle
// than it had at the call, and the sample after it. An in-process server
// is collected directly; an external one is made to allocate by scraping
// /metrics (each scrape allocates on the server) until its GC count moves.
// Bounded by limit.
func (t *target) waitGC(ctx context.Context, limit time.Duration) (serverSample, bool, error) {
	before, err := t.sample(ctx)
	if err != nil {
		return before, false, err
	}
	if t.inproc != nil {
		runtime.GC()
		s, err := t.sample(ctx)
		return s, err == nil, err
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m, err := t.metrics(ctx)
		if err != nil {
			return before, false, err
		}
		if m["go_gc_duration_seconds_count"] > before.gcCount {
			s, err := t.sample(ctx)
			return s, err == nil, err
		}
	}
	s, err := t.sample(ctx)
	return s, false, err
}
