// Command presencebench is the load tool for presenced. It drives a running
// presenced over its public gRPC and REST APIs (--grpc-addr, --http-addr;
// --server-pid for its RSS and CPU from /proc) or, with --inprocess, a
// daemon started inside the bench for a quick look (such results are marked
// and are not comparable: client and server share the process).
//
// Scenarios (--scenario):
//
//	idle     N sessions identified and heartbeating; server RSS and
//	         goroutines per session
//	fanout   Broadcast to N sessions at a fixed rate and at saturation;
//	         deliveries/s, publish->receive latency, evictions
//	unicast  REST SendToUid to random uids, open-loop at a fixed rate;
//	         latency from each push's scheduled time to receipt
//	silent   some clients stop sending (TCP stays open, they keep reading);
//	         time to eviction against the heartbeat timeout
//	slow     1% of clients stop reading during 1 KiB broadcasts; the
//	         others' latency with and without them, time to end them, RSS
//	churn    connect/identify/disconnect cycles; sessions/s, goroutines
//	         and heap back to baseline
//	cluster  several nodes joined over NATS (--nodes GRPC/HTTP,...,
//	         --server-pids, --nats-pid): sessions spread evenly over them;
//	         REST SendToUid cross-node and same-node alternately, open
//	         loop at --rate in all (the hop's cost as a ratio in one run);
//	         then Broadcasts through the first node at saturation,
//	         receipts counted on every node; API delivered counts are
//	         checked against receipts. bench/cluster.sh runs it.
//
// Clients (--client): grpc (default) carries the sessions with grpc-go;
// raw with the bench's own minimal HTTP/2 client (rawclient.go), one
// reader and one heartbeat goroutine per connection, which costs the bench
// a fraction of grpc-go's CPU per received message, so that a saturated
// fan-out measures the server rather than the tool. raw runs idle, fanout,
// unicast, silent, churn (each cycle on a connection of its own, read by
// the cycle's goroutine: no goroutines per connection) and slow's reading
// sessions (its stalled ones stay on grpc-go).
//
// Safety: it only ever talks to 127.0.0.0/8. Every address is resolved up
// front and refused unless it is loopback, and every dial checks again.
// Every phase is bounded by --duration (or a count) and the whole run by
// --deadline; progress goes to stderr, a table to stdout, JSON to --out.
//
// Two helper modes: --serve runs only a presence daemon with the --srv-*
// knobs (transport buffers and windows that presenced has no flags for
// yet) and an optional pprof listener, for knob experiments and profiles;
// --summarize prints medians of several --out files as Markdown.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "presencebench:", err)
		os.Exit(1)
	}
}

// config is every flag.
type config struct {
	scenario  string
	grpcAddr  string
	httpAddr  string
	serverPID int
	nodes     string // cluster: GRPC/HTTP pairs, comma-separated
	pids      string // cluster: the nodes' pids, comma-separated
	natsPID   int    // cluster: nats-server's pid, for its CPU
	nodeList  []nodeAddr
	nodePIDs  []int
	inprocess bool
	toolGOGC  int
	out       string
	label     string

	sessions       int
	conns          int
	streamsPerConn int
	sourceAddrs    int
	dialParallel   int

	settle       time.Duration
	duration     time.Duration
	deadline     time.Duration
	rate         float64
	count        int
	window       int
	payloadBytes int
	workers      int
	silentFrac   float64
	slowFrac     float64
	slowControl  bool
	reapInterval time.Duration
	baseline     time.Duration
	churnNewConn bool
	churnUids    int
	clientBDP    bool
	client       string
	seed         uint64

	cpuProfile string
	seriesOut  string
	quickAck   bool
	memProfile string

	serve     bool
	pprofAddr string
	summarize bool

	srv srvConfig
}

// srvConfig configures the in-process daemon (--inprocess, --serve).
type srvConfig struct {
	heartbeatInterval time.Duration
	heartbeatTimeout  time.Duration
	reapInterval      time.Duration
	queueMaxMessages  int
	queueMaxBytes     int
	readBuffer        int
	transport         string
	writeBuffer       int
	initialWindow     int
	initialConnWindow int
	logLevel          string
}

func parseFlags(args []string, stderr io.Writer) (*config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet("presencebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{}
	fs.StringVar(&c.scenario, "scenario", "", "idle, fanout, unicast, silent, slow, churn or cluster")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "127.0.0.1:9090", "presenced gRPC address (must be 127.0.0.0/8)")
	fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8080", "presenced HTTP address: REST and /metrics (must be 127.0.0.0/8)")
	fs.IntVar(&c.serverPID, "server-pid", 0, "presenced's pid, for RSS (/proc/PID/status VmRSS) and CPU (/proc/PID/stat); without it they come from /metrics")
	fs.StringVar(&c.nodes, "nodes", "", "cluster: the nodes, GRPC_ADDR/HTTP_ADDR pairs, comma-separated (each must be 127.0.0.0/8), e.g. 127.0.0.1:19091/127.0.0.1:19081,127.0.0.1:19092/127.0.0.1:19082")
	fs.StringVar(&c.pids, "server-pids", "", "cluster: the nodes' pids in --nodes order, comma-separated, for RSS and CPU (without them they come from each node's /metrics)")
	fs.IntVar(&c.natsPID, "nats-pid", 0, "cluster: the NATS server's pid, for its CPU (counted as the cluster's, not as noise)")
	fs.BoolVar(&c.inprocess, "inprocess", false, "start the server inside the bench (quick look only; results are marked as such)")
	fs.IntVar(&c.toolGOGC, "tool-gogc", 400, "the bench's own GC target percent, so its GC marks on its one CPU rarely fall in a measurement (GOGC in the environment wins; not with --inprocess or --serve, where the server shares the process)")
	fs.StringVar(&c.out, "out", "", "write the JSON report to this file")
	fs.StringVar(&c.label, "label", "", `free text stored in the report; "group#n" groups runs for --summarize`)

	fs.IntVar(&c.sessions, "sessions", 0, "sessions to open (default per scenario: 10000 idle/fanout/unicast, 1000 silent/slow, 3000 cluster in all)")
	fs.IntVar(&c.conns, "conns", 0, "client connections to carry the sessions (default one per session)")
	fs.IntVar(&c.streamsPerConn, "streams-per-conn", 0, "sessions per connection (overrides --conns)")
	fs.IntVar(&c.sourceAddrs, "source-addrs", 16, "client source addresses to spread sockets over (127.0.0.2 upwards)")
	fs.IntVar(&c.dialParallel, "dial-parallel", 256, "sessions opened at once")

	fs.DurationVar(&c.settle, "settle", 0, "idle: wait after the last session is identified (default heartbeat interval + 2s); silent: before going silent (default one interval); cluster: the idle CPU baseline before the pushes (default 2s); churn: after the churn, before the GCs (default 6s, past the presence grace); slow: broadcasts before the baseline, not measured (default 3s)")
	fs.DurationVar(&c.duration, "duration", 0, "cap of the measured phase (default: fanout 15s fixed-rate phase, unicast 20s, cluster 20s unicast phase (its broadcast phase is capped at twice that), slow 20s stall phase, churn 10s, silent 3 timeouts + reap interval)")
	fs.DurationVar(&c.deadline, "deadline", 10*time.Minute, "overall deadline of the run")
	fs.Float64Var(&c.rate, "rate", 0, "offered rate per second (default: fanout 2 broadcasts, unicast 500 pushes, slow 50 broadcasts, cluster 500 pushes, half of them cross-node)")
	fs.IntVar(&c.count, "count", 0, "fanout: broadcasts in the saturation phase (default 300); cluster: likewise (default 100); churn: cycles (default 50000)")
	fs.IntVar(&c.window, "window", 16, "fanout saturation: broadcasts in flight (sent, not yet received by every session); must stay below the server's queue bound")
	fs.IntVar(&c.payloadBytes, "payload-bytes", -1, "approximate push payload size (default: slow 1024, others just the timestamp)")
	fs.IntVar(&c.workers, "workers", 0, "unicast: concurrent REST requests (default 64); churn: concurrent cycles (default 32)")
	fs.Float64Var(&c.silentFrac, "silent-frac", 0.1, "silent: fraction of sessions that go silent")
	fs.Float64Var(&c.slowFrac, "slow-frac", 0.01, "slow: fraction of sessions that stop reading")
	fs.BoolVar(&c.slowControl, "slow-control", false, "slow: a control run: the sessions chosen to stall keep reading, so the phases differ only in time (their p99 ratio is the run's own noise)")
	fs.DurationVar(&c.reapInterval, "reap-interval", 0, "silent: the server's reap interval, for the eviction bound (default the in-process server's, else 10s)")
	fs.DurationVar(&c.baseline, "baseline", 5*time.Second, "slow: phase with every client reading, before 1% stop")
	fs.BoolVar(&c.churnNewConn, "churn-new-conn", true, "churn: a new TCP connection per cycle (false: cycle streams over --workers kept connections)")
	fs.BoolVar(&c.clientBDP, "client-bdp", false, "clients use grpc-go's default dynamic HTTP/2 windows (BDP estimation: a ping to the server after each burst it sends) instead of the static 64 KiB windows the Go client sets")
	fs.StringVar(&c.client, "client", clientGRPC, "the client carrying the sessions: grpc (grpc-go) or raw (the bench's own minimal HTTP/2 client: one reader goroutine per connection, for a lower cost per received message and per churn cycle; idle, fanout, unicast, silent, churn (with --churn-new-conn) and slow (whose stalled sessions stay on grpc-go) only)")
	fs.IntVar(&c.churnUids, "churn-uids", 1000, "churn: cycle over this many uids, as users reconnecting do (0: a new uid every cycle; the server then keeps a last-seen time for each, up to --last-seen-max, which shows in the heap)")
	fs.Uint64Var(&c.seed, "seed", 1, "random seed (uid choice in unicast)")

	fs.BoolVar(&c.quickAck, "quickack", true, "fanout with --client raw: before the fixed-rate phase, take the bench's sockets out of delayed-ACK mode (TCP_QUICKACK), which the Identify exchange put them in. On loopback a client's delayed-ACK timer fires on the server's core, so without this the first broadcast over a connection per session also pays for 10,000 timers that a real client's machine would run (BENCHMARKS.md)")
	fs.StringVar(&c.seriesOut, "series", "", "slow, unicast, fanout (its fixed-rate phase): write one CSV line per push or broadcast to this file (its index, scheduled time as an offset and in unix seconds, receipts, and the receipts' p50, p99 and max latency, whole and to the server's sent_at), to see when a tail happens")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (with --inprocess it includes the server)")
	fs.StringVar(&c.memProfile, "memprofile", "", "write a heap profile of this process at the end of the measured phase")

	fs.BoolVar(&c.serve, "serve", false, "run only a presence daemon with the --srv-* settings on --grpc-addr/--http-addr until SIGINT or --deadline")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "--serve: serve net/http/pprof here (loopback only)")
	fs.BoolVar(&c.summarize, "summarize", false, "print Markdown medians of the JSON reports named as arguments")

	fs.DurationVar(&c.srv.heartbeatInterval, "srv-heartbeat-interval", 0, "in-process/--serve server: heartbeat interval (default the server's)")
	fs.DurationVar(&c.srv.heartbeatTimeout, "srv-heartbeat-timeout", 0, "in-process/--serve server: heartbeat timeout")
	fs.DurationVar(&c.srv.reapInterval, "srv-reap-interval", 0, "in-process/--serve server: reap interval")
	fs.IntVar(&c.srv.queueMaxMessages, "srv-queue-max-messages", 0, "in-process/--serve server: outbound queue bound, frames")
	fs.IntVar(&c.srv.queueMaxBytes, "srv-queue-max-bytes", 0, "in-process/--serve server: outbound queue bound, bytes")
	fs.StringVar(&c.srv.transport, "srv-transport", "", "in-process/--serve server: lite or grpc (default: the daemon's, lite)")
	fs.IntVar(&c.srv.readBuffer, "srv-read-buffer", 0, "in-process/--serve server: grpc.ReadBufferSize per connection (0: grpc default 32 KiB)")
	fs.IntVar(&c.srv.writeBuffer, "srv-write-buffer", 0, "in-process/--serve server: grpc.WriteBufferSize per connection (0: grpc default)")
	fs.IntVar(&c.srv.initialWindow, "srv-initial-window", 0, "in-process/--serve server: stream flow-control window (0: grpc default, with BDP)")
	fs.IntVar(&c.srv.initialConnWindow, "srv-initial-conn-window", 0, "in-process/--serve server: connection flow-control window (0: grpc default)")
	fs.StringVar(&c.srv.logLevel, "srv-log", "", `in-process/--serve server log: "info" (as presenced) or "off" (default: info for --serve, off in-process)`)

	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: presencebench --scenario NAME [flags]\n       presencebench --serve [flags]\n       presencebench --summarize FILE.json...\n\nLoad tool for presenced; talks only to 127.0.0.0/8.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	if c.summarize || c.serve {
		return c, fs, nil
	}
	if fs.NArg() > 0 {
		return nil, fs, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if _, ok := scenarios[c.scenario]; !ok {
		return nil, fs, fmt.Errorf("--scenario %q: want one of %s", c.scenario, scenarioNames())
	}
	if c.deadline <= 0 {
		return nil, fs, errors.New("--deadline must be positive")
	}
	if c.sessions < 0 || c.conns < 0 || c.streamsPerConn < 0 || c.count < 0 || c.workers < 0 || c.rate < 0 || c.churnUids < 0 {
		return nil, fs, errors.New("counts and rates must not be negative")
	}
	if c.sessions > 19000 {
		return nil, fs, fmt.Errorf("--sessions %d: one server holds at most ~19,000 connections under the 20,000 open-file limit", c.sessions)
	}
	if c.silentFrac <= 0 || c.silentFrac >= 1 || c.slowFrac <= 0 || c.slowFrac >= 1 {
		return nil, fs, errors.New("--silent-frac and --slow-frac must be between 0 and 1")
	}
	if err := clientSupports(c.client, c.scenario); err != nil {
		return nil, fs, err
	}
	if c.client == clientRaw && c.scenario == "churn" && !c.churnNewConn {
		return nil, fs, errors.New("--client raw runs churn with a new connection per cycle only; --churn-new-conn=false needs --client grpc")
	}
	if c.client == clientRaw && c.clientBDP {
		return nil, fs, errors.New("--client-bdp is a setting of grpc-go's client; --client raw always uses static 64 KiB windows")
	}
	if c.scenario != "cluster" {
		if c.nodes != "" || c.pids != "" || c.natsPID != 0 {
			return nil, fs, errors.New("--nodes, --server-pids and --nats-pid are for --scenario cluster")
		}
		return c, fs, nil
	}
	if c.inprocess || c.serverPID != 0 {
		return nil, fs, errors.New("--scenario cluster drives external nodes: give --nodes and --server-pids, not --inprocess or --server-pid")
	}
	var err error
	if c.nodeList, err = parseNodes(c.nodes); err != nil {
		return nil, fs, err
	}
	if len(c.nodeList) < 2 {
		return nil, fs, fmt.Errorf("--nodes: %d node; a cluster scenario needs at least 2", len(c.nodeList))
	}
	if c.nodePIDs, err = parsePIDs(c.pids, len(c.nodeList)); err != nil {
		return nil, fs, err
	}
	if c.natsPID < 0 {
		return nil, fs, errors.New("--nats-pid must not be negative")
	}
	return c, fs, nil
}

// scenario runs one scenario, filling e.rep.
type scenarioFunc func(ctx context.Context, e *env) error

var scenarios = map[string]scenarioFunc{
	"idle":    runIdle,
	"fanout":  runFanout,
	"unicast": runUnicast,
	"silent":  runSilent,
	"slow":    runSlow,
	"churn":   runChurn,
	"cluster": runCluster,
}

func scenarioNames() string {
	return "idle, fanout, unicast, silent, slow, churn, cluster"
}

// env is what a scenario works with.
type env struct {
	cfg   *config
	t     *target
	rep   *Report
	pr    *progress
	runID string    // uid prefix, unique per run
	nodes []*target // cluster: every node (t is nodes[0])

	heapDone bool // --memprofile written
}

// heapProfile writes --memprofile once: scenarios call it at their
// measurement point (sessions still open); run calls it at the end in case
// a scenario did not.
func (e *env) heapProfile() error {
	if e.cfg.memProfile == "" || e.heapDone {
		return nil
	}
	e.heapDone = true
	runtime.GC() // up-to-date heap profile
	if err := writeHeapProfile(e.cfg.memProfile); err != nil {
		return fmt.Errorf("--memprofile: %w", err)
	}
	e.pr.printf("wrote heap profile %s", e.cfg.memProfile)
	return nil
}

// toolGC sets the bench's own GC target (--tool-gogc) unless GOGC is set
// or the server runs in this process, and returns the one in force. The
// bench holds as many client sessions as the server, so its heap is as
// large; a GC mark on its one CPU delays its sends and receipts by up to
// tens of milliseconds, which the latencies would count against the
// server. The server's GC is not touched.
func toolGC(cfg *config) int {
	if v, ok := os.LookupEnv("GOGC"); ok {
		if v == "off" {
			return -1
		}
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		return 100
	}
	if cfg.inprocess {
		return 100
	}
	debug.SetGCPercent(cfg.toolGOGC)
	return cfg.toolGOGC
}

func run(args []string, stdout, stderr io.Writer) error {
	cfg, fs, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if cfg.summarize {
		return summarizeReports(fs.Args(), stdout)
	}
	if cfg.serve {
		return serve(cfg, stderr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.deadline)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	var t *target
	var nodes []*target
	if cfg.scenario == "cluster" {
		if nodes, err = clusterTargets(ctx, cfg); err != nil {
			return err
		}
		t = nodes[0]
		for _, n := range nodes[1:] {
			defer n.close()
		}
	} else if t, err = newTarget(ctx, cfg); err != nil {
		return err
	}
	defer t.close()

	rep := newReport(cfg, args)
	rep.Machine.ToolGOGC = toolGC(cfg)
	rep.Machine.Client = cfg.client
	rep.Target = Target{GRPCAddr: t.grpcAddr, HTTPAddr: t.httpAddr, ServerPID: t.pid}
	rep.Machine.ServerCPUs = t.serverCPUs()
	e := &env{cfg: cfg, t: t, nodes: nodes, rep: rep, pr: newProgress(stderr, cfg.scenario), runID: fmt.Sprintf("b%x", time.Now().UnixNano()&0xffffffff)}
	// The server's CPU, not noise: with a cluster every node's and NATS's.
	serverCPU := t.cpuSeconds
	if nodes != nil {
		for _, n := range nodes {
			rep.Nodes = append(rep.Nodes, Target{GRPCAddr: n.grpcAddr, HTTPAddr: n.httpAddr, ServerPID: n.pid})
		}
		rep.Machine.ServerCPUs = unionCPUs(nodes)
		rep.Machine.NATSPID = cfg.natsPID
		serverCPU = func(ctx context.Context) float64 { return e.clusterCPU(ctx, true) }
	}
	if cfg.inprocess {
		rep.note("IN-PROCESS: server and clients share this process and its CPUs; RSS, goroutines, heap and CPU include the bench itself; a quick look only")
	}

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	start := time.Now()
	load0, busy0, srv0, cpu0 := loadAvg(), systemBusy(), serverCPU(ctx), cpuNow()
	e.pr.printf("target gRPC %s HTTP %s (pid %d, inprocess %v)", t.grpcAddr, t.httpAddr, t.pid, cfg.inprocess)
	serr := scenarios[cfg.scenario](ctx, e)
	if serr == nil && ctx.Err() != nil {
		// Every wait in a scenario is bounded by ctx; one that ran into
		// the deadline did not finish, whatever it managed to report.
		serr = fmt.Errorf("the run's --deadline (%v) expired before the scenario finished: its figures are incomplete", cfg.deadline)
	}
	if cfg.clientBDP {
		// Another client configuration: a run of its own in summaries.
		rep.Variant += " client-bdp"
	}
	if cfg.client == clientRaw {
		rep.Variant += " client-raw"
	}
	rep.WallSec = round3(time.Since(start).Seconds())
	// How busy the rest of the machine was: other processes' CPU is noise.
	if busy1, srv1 := systemBusy(), serverCPU(context.Background()); busy0 >= 0 && busy1 >= 0 {
		tool := cpuSince(cpu0)
		others := busy1 - busy0 - tool.UserSec - tool.SysSec
		if !cfg.inprocess && srv0 >= 0 && srv1 >= 0 {
			others -= srv1 - srv0
		}
		cores := max(0, others/tool.WallSec)
		note := "CPU used by other processes during the run (noise)"
		if cores > 0.25 {
			note += "; NOISY: other work competed for the CPUs"
			rep.note("other processes used %.2f cores during the run (load average %.1f at start): figures are noisy", cores, load0)
		}
		rep.metric("machine.other_cpu", cores, "cores", note)
		rep.metric("machine.loadavg_start", load0, "", "")
	}
	if serr != nil {
		rep.Error = serr.Error()
	}
	if err := e.heapProfile(); err != nil {
		serr = errors.Join(serr, err)
	}
	rep.printTable(stdout)
	if cfg.out != "" {
		if err := rep.writeJSON(cfg.out); err != nil {
			return errors.Join(serr, fmt.Errorf("--out: %w", err))
		}
		e.pr.printf("wrote %s", cfg.out)
	}
	return serr
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("heap").WriteTo(f, 0)
}

// connLayout returns how many connections carry n sessions.
func (c *config) connLayout(n int) (conns, perConn int) {
	switch {
	case c.streamsPerConn > 0:
		perConn = c.streamsPerConn
		conns = (n + perConn - 1) / perConn
	case c.conns > 0:
		conns = min(c.conns, n)
		perConn = (n + conns - 1) / conns
	default:
		conns, perConn = n, 1
	}
	return max(conns, 1), max(perConn, 1)
}

// orDefault returns v, or def when v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
