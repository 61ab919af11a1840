package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is one run of one scenario: what the table on stdout shows and
// what --out holds as JSON.
type Report struct {
	Tool      string    `json:"tool"`
	Scenario  string    `json:"scenario"`
	Variant   string    `json:"variant"` // the shape of the run, e.g. "conns=100 streams/conn=100"
	Label     string    `json:"label,omitempty"`
	InProcess bool      `json:"inprocess"` // server in the bench's process: a quick look only
	StartedAt time.Time `json:"started_at"`
	WallSec   float64   `json:"wall_s"`
	Machine   Machine   `json:"machine"`
	Target    Target    `json:"target"`
	Nodes     []Target  `json:"nodes,omitempty"` // cluster: every node (Target is the first)
	Args      []string  `json:"args"`

	Metrics   []Metric           `json:"metrics"`
	Checks    []Check            `json:"checks"`
	Latencies map[string]Latency `json:"latencies,omitempty"`
	ToolCPU   map[string]CPU     `json:"tool_cpu,omitempty"`
	Ends      map[string]int     `json:"ends,omitempty"` // how sessions ended, by code/Goodbye
	Detail    map[string]any     `json:"detail,omitempty"`
	Notes     []string           `json:"notes,omitempty"`
	Error     string             `json:"error,omitempty"`
}

// Machine describes where the bench ran.
type Machine struct {
	NumCPU     int    `json:"nproc"`
	ToolCPUs   int    `json:"tool_cpus"`
	Model      string `json:"cpu_model"`
	GoVersion  string `json:"go_version"`
	ToolGOGC   int    `json:"tool_gogc"`             // the bench's own GC target (--tool-gogc)
	Client     string `json:"client"`                // what carries the sessions (--client): grpc or raw
	ServerCPUs int    `json:"server_cpus,omitempty"` // cluster: the union of the nodes' affinities
	NATSPID    int    `json:"nats_pid,omitempty"`    // cluster: the NATS server, whose CPU is not noise
}

// Target describes the server under test.
type Target struct {
	GRPCAddr          string `json:"grpc_addr"`
	HTTPAddr          string `json:"http_addr"`
	ServerPID         int    `json:"server_pid,omitempty"`
	HeartbeatInterval string `json:"heartbeat_interval,omitempty"`
	HeartbeatTimeout  string `json:"heartbeat_timeout,omitempty"`
}

// Metric is one figure of a run.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Note  string  `json:"note,omitempty"`
}

// Check is a figure against its target.
type Check struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	Got    string `json:"got"`
	Pass   bool   `json:"pass"`
}

func newReport(cfg *config, args []string) *Report {
	return &Report{
		Tool:      "presencebench",
		Scenario:  cfg.scenario,
		Label:     cfg.label,
		InProcess: cfg.inprocess,
		StartedAt: time.Now().UTC().Round(time.Second),
		Machine: Machine{
			NumCPU:    runtime.NumCPU(),
			ToolCPUs:  toolCPUs(),
			Model:     cpuModel(),
			GoVersion: runtime.Version(),
		},
		Args:      args,
		Latencies: map[string]Latency{},
		ToolCPU:   map[string]CPU{},
		Detail:    map[string]any{},
	}
}

func (r *Report) metric(name string, v float64, unit, note string) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: round3(v), Unit: unit, Note: note})
}

func (r *Report) check(name, target, got string, pass bool) {
	if r.InProcess {
		name += " (inprocess: not comparable)"
	}
	r.Checks = append(r.Checks, Check{Name: name, Target: target, Got: got, Pass: pass})
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// latency records a latency summary as named metrics too.
func (r *Report) latency(name string, l Latency) {
	r.Latencies[name] = l
	r.metric(name+".p50", l.P50Ms, "ms", "")
	r.metric(name+".p99", l.P99Ms, "ms", "")
	r.metric(name+".p999", l.P999, "ms", "")
	r.metric(name+".max", l.MaxMs, "ms", fmt.Sprintf("n=%d", l.Count))
}

// cpu records the tool's CPU over a phase beside a throughput figure.
func (r *Report) cpu(phase string, c CPU) {
	r.ToolCPU[phase] = c
	note := ""
	if c.Limited {
		note = "TOOL-LIMITED: the bench used ~all its CPU; the figure may measure the tool"
		r.note("%s: the bench used %.2f cores of %d; throughput there may be the tool's limit, not the server's", phase, c.Cores, toolCPUs())
	}
	r.metric(phase+".tool_cpu", c.Cores, "cores", note)
}

// serverCPU records the server's CPU use over a phase.
func (r *Report) serverCPU(phase string, seconds, wall float64) {
	if seconds < 0 || wall <= 0 {
		return
	}
	cores := seconds / wall
	note := ""
	if n := r.Machine.ServerCPUs; n > 0 && cores >= 0.9*float64(n) {
		note = fmt.Sprintf("server saturated its %d CPU(s)", n)
	}
	r.metric(phase+".server_cpu", cores, "cores", note)
}

// perServerCPU records count/seconds of server CPU: what one fully
// available server core would do at this efficiency. On a machine where
// other processes take CPU from the server, wall-clock throughput measures
// the contention; this figure does not (it is a little pessimistic:
// contention also costs cache misses and context switches).
func (r *Report) perServerCPU(name string, count, seconds float64, unit string) {
	if seconds <= 0 {
		return
	}
	r.metric(name, count/seconds, unit, "per second of server CPU (one-core capacity estimate)")
}

// printTable writes the report as a table.
func (r *Report) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	mode := "external server"
	if r.InProcess {
		mode = "IN-PROCESS server (quick look; not comparable)"
	}
	fmt.Fprintf(tw, "scenario\t%s\t%s\n", r.Scenario, r.Variant)
	if r.Machine.Client != "" {
		fmt.Fprintf(tw, "client\t%s\t\n", r.Machine.Client)
	}
	if len(r.Nodes) == 0 {
		fmt.Fprintf(tw, "target\t%s / %s\t%s, pid %d\n", r.Target.GRPCAddr, r.Target.HTTPAddr, mode, r.Target.ServerPID)
	}
	for i, n := range r.Nodes {
		fmt.Fprintf(tw, "node %s\t%s / %s\t%s, pid %d\n", nodeName(i), n.GRPCAddr, n.HTTPAddr, mode, n.ServerPID)
	}
	fmt.Fprintf(tw, "\t\t\n")
	fmt.Fprintf(tw, "METRIC\tVALUE\tUNIT\tNOTE\n")
	for _, m := range r.Metrics {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, fmtValue(m.Value), m.Unit, m.Note)
	}
	if len(r.Checks) > 0 {
		fmt.Fprintf(tw, "\t\t\n")
		fmt.Fprintf(tw, "CHECK\tTARGET\tGOT\tRESULT\n")
		for _, c := range r.Checks {
			res := "FAIL"
			if c.Pass {
				res = "pass"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Target, c.Got, res)
		}
	}
	if len(r.Ends) > 0 {
		keys := make([]string, 0, len(r.Ends))
		for k := range r.Ends {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k, r.Ends[k]))
		}
		fmt.Fprintf(tw, "\t\t\nsessions ended\t%s\t\n", strings.Join(parts, " "))
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
}

func fmtValue(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.3f", v)
}

// writeJSON writes the report to path.
func (r *Report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// cpuModel is the "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
