package main

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/presence-dev/presence/cluster"
	"github.com/presence-dev/presence/daemon"
	"github.com/presence-dev/presence/server"
)

func TestParseNodes(t *testing.T) {
	got, err := parseNodes(" 127.0.0.1:19091/127.0.0.1:19081, localhost:19092/127.0.0.1:19082 ")
	want := []nodeAddr{{"127.0.0.1:19091", "127.0.0.1:19081"}, {"localhost:19092", "127.0.0.1:19082"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("parseNodes = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{
		"",
		"127.0.0.1:19091",                     // no HTTP address
		"127.0.0.1:19091/",                    // empty HTTP address
		"/127.0.0.1:19081",                    // empty gRPC address
		"127.0.0.1:1/127.0.0.1:2/127.0.0.1:3", // three addresses
		"127.0.0.1:1/127.0.0.1:2,",            // empty node
		"127.0.0.1:1/127.0.0.1:2,127.0.0.1:1/127.0.0.1:3", // the same port twice
	} {
		if got, err := parseNodes(bad); err == nil {
			t.Errorf("parseNodes(%q) = %v; want an error", bad, got)
		}
	}
}

func TestParsePIDs(t *testing.T) {
	if got, err := parsePIDs("", 3); err != nil || !reflect.DeepEqual(got, []int{0, 0, 0}) {
		t.Errorf(`parsePIDs("", 3) = %v, %v; want zeros`, got, err)
	}
	if got, err := parsePIDs("10, 20,30", 3); err != nil || !reflect.DeepEqual(got, []int{10, 20, 30}) {
		t.Errorf("parsePIDs = %v, %v", got, err)
	}
	for _, bad := range []string{"10,20", "10,20,30,40", "10,x,30", "10,-1,30", "10,0,30"} {
		if _, err := parsePIDs(bad, 3); err == nil {
			t.Errorf("parsePIDs(%q, 3) = nil error", bad)
		}
	}
}

// TestClusterFlags proves the cluster flags are checked before anything
// is dialled: at least two nodes, one pid per node, cluster-only flags
// refused elsewhere, and non-loopback nodes refused.
func TestClusterFlags(t *testing.T) {
	two := "127.0.0.1:1/127.0.0.1:2,127.0.0.1:3/127.0.0.1:4"
	var stderr bytes.Buffer
	c, _, err := parseFlags([]string{"--scenario", "cluster", "--nodes", two, "--server-pids", "5,6"}, &stderr)
	if err != nil || len(c.nodeList) != 2 || !reflect.DeepEqual(c.nodePIDs, []int{5, 6}) {
		t.Fatalf("parseFlags = %+v, %v", c, err)
	}
	for _, args := range [][]string{
		{"--scenario", "cluster"},
		{"--scenario", "cluster", "--nodes", "127.0.0.1:1/127.0.0.1:2"},
		{"--scenario", "cluster", "--nodes", two, "--server-pids", "5"},
		{"--scenario", "cluster", "--nodes", two, "--inprocess"},
		{"--scenario", "cluster", "--nodes", two, "--server-pid", "5"},
		{"--scenario", "unicast", "--nodes", two},
		{"--scenario", "unicast", "--nats-pid", "7"},
	} {
		if _, _, err := parseFlags(args, &stderr); err == nil {
			t.Errorf("parseFlags(%q) = nil error", args)
		}
	}
	for _, nodes := range []string{"127.0.0.1:1/127.0.0.1:2,10.0.0.1:3/127.0.0.1:4", "127.0.0.1:1/127.0.0.1:2,127.0.0.1:3/192.0.2.1:4"} {
		var stdout bytes.Buffer
		err := run([]string{"--scenario", "cluster", "--nodes", nodes, "--deadline", "5s"}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("run with --nodes %s = %v; want a loopback refusal", nodes, err)
		}
	}
}

// TestCPUList proves affinity lists are read as Linux writes them, and
// that the nodes' CPUs are counted once however many nodes share them.
func TestCPUList(t *testing.T) {
	for list, want := range map[string][]int{"0": {0}, "0-1": {0, 1}, "0-2,4": {0, 1, 2, 4}, "1,3-4": {1, 3, 4}, "": nil, "x": nil} {
		if got := expandCPUList(list); !reflect.DeepEqual(got, want) {
			t.Errorf("expandCPUList(%q) = %v; want %v", list, got, want)
		}
		if got := countCPUList(list); got != len(want) {
			t.Errorf("countCPUList(%q) = %d; want %d", list, got, len(want))
		}
	}
	self := &target{pid: os.Getpid()}
	if n := unionCPUs([]*target{self, self, self}); n != self.serverCPUs() || n < 1 {
		t.Errorf("unionCPUs of three of this process = %d; want its own %d", n, self.serverCPUs())
	}
	if n := unionCPUs([]*target{self, {}}); n != 0 {
		t.Errorf("unionCPUs with an unknown pid = %d; want 0", n)
	}
}

func TestSessionsPerNode(t *testing.T) {
	for _, c := range []struct {
		n, k int
		want []int
	}{{3000, 3, []int{1000, 1000, 1000}}, {10, 3, []int{4, 3, 3}}, {3, 3, []int{1, 1, 1}}} {
		if got := sessionsPerNode(c.n, c.k); !reflect.DeepEqual(got, c.want) {
			t.Errorf("sessionsPerNode(%d, %d) = %v; want %v", c.n, c.k, got, c.want)
		}
	}
}

// TestPlanUnicast proves cross-node pushes go through another node than
// the one holding the session and same-node ones through it, half each,
// and that every (through, holder) pair of nodes is used about evenly.
func TestPlanUnicast(t *testing.T) {
	const nodes, count = 3, 6000
	var nodeOf []int
	for _, n := range sessionsPerNode(30, nodes) {
		for range n {
			nodeOf = append(nodeOf, len(nodeOf)%nodes) // interleaved holders
		}
	}
	plan := planUnicast(rand.New(rand.NewPCG(1, 2)), nodeOf, nodes, count)
	if len(plan) != count {
		t.Fatalf("len(plan) = %d", len(plan))
	}
	pairs := map[[2]int]int{}
	cross := 0
	for k, p := range plan {
		holder := nodeOf[p.session]
		if p.cross != (k%2 == 0) {
			t.Fatalf("push %d: cross = %v; want even pushes cross-node", k, p.cross)
		}
		if p.cross && p.via == holder {
			t.Fatalf("push %d: cross-node through %d, the holder", k, p.via)
		}
		if !p.cross && p.via != holder {
			t.Fatalf("push %d: same-node through %d; holder %d", k, p.via, holder)
		}
		if p.cross {
			cross++
			pairs[[2]int{p.via, holder}]++
		}
	}
	if cross != count/2 {
		t.Errorf("%d cross-node pushes; want %d", cross, count/2)
	}
	if len(pairs) != nodes*(nodes-1) {
		t.Errorf("cross-node (via, holder) pairs used: %v; want all %d", pairs, nodes*(nodes-1))
	}
	even := count / 2 / (nodes * (nodes - 1))
	for pair, n := range pairs {
		if n < even*8/10 || n > even*12/10 {
			t.Errorf("pair %v: %d pushes; want about %d", pair, n, even)
		}
	}
	// A two-node cluster: the other node is always the one.
	plan = planUnicast(rand.New(rand.NewPCG(1, 2)), []int{0, 1}, 2, 100)
	for _, p := range plan {
		if p.cross && p.via == []int{0, 1}[p.session] {
			t.Fatalf("two nodes: %+v goes through its holder", p)
		}
	}
}

// TestClusterScenario runs the cluster scenario, tiny, against three
// daemons joined over an embedded NATS server (JetStream on, as
// bench/cluster.sh runs it), and checks that every push and broadcast is
// counted where it should be.
func TestClusterScenario(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("NATS not ready")
	}
	var addrs []string
	for _, name := range []string{"a", "b", "c"} {
		d, err := daemon.Start(daemon.Config{
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			Server:  server.Options{},
			Cluster: cluster.Config{URL: ns.ClientURL(), Name: name, Heartbeat: 100 * time.Millisecond, NodeTimeout: time.Second, RequestTimeout: 2 * time.Second},
			Logger:  slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatalf("node %s: %v", name, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			d.Shutdown(ctx)
		})
		addrs = append(addrs, d.GRPCAddr()+"/"+d.HTTPAddr())
	}
	r, table := runReport(t, "--scenario", "cluster", "--nodes", strings.Join(addrs, ","), "--sessions", "30",
		"--rate", "100", "--duration", "1s", "--settle", "200ms", "--count", "20", "--window", "4")
	if len(r.Nodes) != 3 || r.Error != "" {
		t.Fatalf("report: %d nodes, error %q", len(r.Nodes), r.Error)
	}
	for _, name := range []string{"cross", "same"} {
		acc, del, recv := metricOf(t, r, name+".accepted"), metricOf(t, r, name+".delivered"), metricOf(t, r, name+".received")
		if acc != 50 || del != 50 || recv != 50 {
			t.Errorf("%s accepted/delivered/received = %v/%v/%v; want 50 each", name, acc, del, recv)
		}
		checkPassed(t, r, "cluster "+name+"-node unicast")
	}
	if got := metricOf(t, r, "bcast.received"); got != 30*20 {
		t.Errorf("bcast.received = %v; want 600", got)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if got := metricOf(t, r, "bcast.received."+n); got != 10*20 {
			t.Errorf("bcast.received.%s = %v; want 200", n, got)
		}
	}
	checkPassed(t, r, "cluster broadcast")
	checkPassed(t, r, "cluster: no session ended")
	if !strings.Contains(table, "node n3") {
		t.Errorf("table does not list the nodes:\n%s", table)
	}
}
