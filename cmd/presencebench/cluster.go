package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// The cluster scenario drives several presenced nodes joined over NATS
// (--nodes, one GRPC/HTTP pair per node). Sessions are spread evenly over
// the nodes; then
//
//   - unicast: REST SendToUid open loop at --rate pushes per second in all,
//     alternately cross-node (through a node other than the one holding
//     the uid's session) and same-node (through the node holding it), so
//     the hop's cost is a ratio measured under the same conditions in one
//     run, and the REST load is that of the unicast scenario at that rate;
//   - broadcast: Broadcasts through the first node at saturation (the
//     fanout scenario's window logic), receipts counted per node.
//
// Every API answer's delivered count is checked against what the sessions
// received, so nothing is lost silently.

// nodeAddr is one node of --nodes.
type nodeAddr struct {
	grpc, http string
}

// parseNodes parses --nodes: comma-separated GRPC/HTTP address pairs, e.g.
// "127.0.0.1:19091/127.0.0.1:19081,127.0.0.1:19092/127.0.0.1:19082".
// Whether the addresses are loopback is checked when they are resolved.
func parseNodes(s string) ([]nodeAddr, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("--nodes is empty: give GRPC/HTTP pairs, comma-separated")
	}
	var out []nodeAddr
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		g, h, ok := strings.Cut(part, "/")
		g, h = strings.TrimSpace(g), strings.TrimSpace(h)
		if !ok || g == "" || h == "" || strings.Contains(h, "/") {
			return nil, fmt.Errorf("--nodes: %q is not GRPC_ADDR/HTTP_ADDR", part)
		}
		for _, a := range []string{g, h} {
			if seen[a] {
				return nil, fmt.Errorf("--nodes: %s appears twice", a)
			}
			seen[a] = true
		}
		out = append(out, nodeAddr{grpc: g, http: h})
	}
	return out, nil
}

// parsePIDs parses --server-pids: empty (no pids: CPU and RSS come from
// each node's /metrics) or exactly n comma-separated positive pids.
func parsePIDs(s string, n int) ([]int, error) {
	pids := make([]int, n)
	if strings.TrimSpace(s) == "" {
		return pids, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) != n {
		return nil, fmt.Errorf("--server-pids: %d pids for %d nodes", len(parts), n)
	}
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("--server-pids: %q is not a pid", p)
		}
		pids[i] = v
	}
	return pids, nil
}

// clusterTargets resolves every node of --nodes (loopback only).
func clusterTargets(ctx context.Context, cfg *config) ([]*target, error) {
	var out []*target
	for i, n := range cfg.nodeList {
		t, err := externalTarget(ctx, "nodes", n.grpc, n.http, cfg.nodePIDs[i], cfg.sourceAddrs)
		if t != nil {
			t.staticWindow = !cfg.clientBDP
		}
		if err != nil {
			for _, o := range out {
				o.close()
			}
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// nodeName is how reports name node i (0-based): n1, n2, ...
func nodeName(i int) string { return "n" + strconv.Itoa(i+1) }

// clusterCPU is the CPU seconds used so far by every node (and, with
// nats, by the NATS server of --nats-pid), or -1 if any is unknown.
func (e *env) clusterCPU(ctx context.Context, nats bool) float64 {
	var sum float64
	for _, t := range e.nodes {
		v := t.cpuSeconds(ctx)
		if v < 0 {
			return -1
		}
		sum += v
	}
	if nats && e.cfg.natsPID > 0 {
		v, err := readProcCPU(e.cfg.natsPID)
		if err != nil {
			return -1
		}
		sum += v
	}
	return sum
}

// natsCPU is the NATS server's CPU seconds so far, or -1.
func (e *env) natsCPU() float64 {
	if e.cfg.natsPID <= 0 {
		return -1
	}
	v, err := readProcCPU(e.cfg.natsPID)
	if err != nil {
		return -1
	}
	return v
}

// nodeCPUs returns every node's CPU seconds so far (-1 where unknown).
func (e *env) nodeCPUs(ctx context.Context) []float64 {
	out := make([]float64, len(e.nodes))
	for i, t := range e.nodes {
		out[i] = t.cpuSeconds(ctx)
	}
	return out
}

// unionCPUs is how many distinct CPUs the nodes may run on together, from
// their affinities, or 0 when a pid is unknown.
func unionCPUs(nodes []*target) int {
	set := map[int]bool{}
	for _, t := range nodes {
		if t.pid <= 0 {
			return 0
		}
		list := t.cpuList()
		if list == "" {
			return 0
		}
		for _, c := range expandCPUList(list) {
			set[c] = true
		}
	}
	return len(set)
}

// expandCPUList lists the CPUs of a list like "0-1,4".
func expandCPUList(s string) []int {
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, ok := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if ok {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for c := a; c <= b && c-a < 4096; c++ {
			out = append(out, c)
		}
	}
	return out
}

// unicastPush is one planned push of the cluster unicast phase.
type unicastPush struct {
	session int  // index into the sessions
	via     int  // node whose REST API takes the push
	cross   bool // via is not the node holding the session
}

// planUnicast plans count pushes to random sessions (nodeOf[i] is the node
// holding session i): even k cross-node, through one of the other nodes
// chosen at random; odd k same-node, through the node holding the session.
func planUnicast(rng *rand.Rand, nodeOf []int, nodes, count int) []unicastPush {
	plan := make([]unicastPush, count)
	for k := range plan {
		s := rng.IntN(len(nodeOf))
		p := unicastPush{session: s, via: nodeOf[s]}
		if k%2 == 0 && nodes > 1 {
			p.via = (nodeOf[s] + 1 + rng.IntN(nodes-1)) % nodes
			p.cross = true
		}
		plan[k] = p
	}
	return plan
}

// pushStats is what the REST answers of one kind of push said.
type pushStats struct {
	mu        sync.Mutex
	codes     map[string]int
	respLat   []int64
	ok        int64 // HTTP 200
	delivered int64 // sum of the answers' delivered
	mismatch  int64 // 200 answers whose delivered was not 1
}

// sessionsPerNode spreads n sessions over k nodes as evenly as possible.
func sessionsPerNode(n, k int) []int {
	out := make([]int, k)
	for i := range out {
		out[i] = n / k
		if i < n%k {
			out[i]++
		}
	}
	return out
}

func runCluster(ctx context.Context, e *env) error {
	cfg, rep, nodes := e.cfg, e.rep, e.nodes
	k := len(nodes)
	n := orDefault(cfg.sessions, 3000)
	if n < k {
		return fmt.Errorf("--sessions %d: want at least one per node (%d nodes)", n, k)
	}
	rate := orDefault(cfg.rate, 500)
	dur := orDefault(cfg.duration, 20*time.Second)
	workers := orDefault(cfg.workers, 64)
	perKind := max(1, int(rate*dur.Seconds()/2))
	count := 2 * perKind // cross and same-node, alternately
	satCount := orDefault(cfg.count, 100)
	window := max(1, cfg.window)
	split := sessionsPerNode(n, k)
	nconns, per := cfg.connLayout(split[0])
	rep.Variant = fmt.Sprintf("nodes=%d sessions=%d conns/node=%d streams/conn=%d rate=%.0f/s half cross-node", k, n, nconns, per, rate)
	rep.Detail["sessions_per_node"] = split
	rep.Detail["saturation_broadcasts"] = satCount
	rep.Detail["window"] = window
	rep.Detail["broadcast_via"] = nodeName(0)

	// Push indices: [0, count) unicast, bcastBase+j broadcast j.
	bcastBase := int64(count)
	tr := newTracker(satCount)
	bcastRecv := make([]atomic.Int64, k)
	var uniRecv, ended atomic.Int64

	var sessions []*session
	var nodeOf []int
	var allConns []*grpc.ClientConn
	defer func() { closeConns(allConns) }()
	defer func() { closeSessions(sessions, 10*time.Second) }()
	for j, t := range nodes {
		nc, _ := cfg.connLayout(split[j])
		conns, err := dialConns(t, nc, 1, false)
		if err != nil {
			return err
		}
		allConns = append(allConns, conns...)
		e.pr.printf("node %s (%s): opening %d sessions", nodeName(j), t.grpcAddr, split[j])
		got, _, err := openSessions(ctx, sessionSpec{
			n: split[j], conns: clientConns{grpc: conns}, prefix: e.runID + "-" + nodeName(j), parallel: cfg.dialParallel,
			onPush: func(s *session, f *frameInfo, now int64) {
				if f.t <= 0 { // warm-up
					return
				}
				if f.idx >= bcastBase {
					tr.got(f.idx-bcastBase, now)
					bcastRecv[j].Add(1)
				} else {
					uniRecv.Add(1)
				}
				s.record(sample{idx: f.idx, total: now - f.t, toSrv: f.sentAt - f.t})
			},
			onEnd: func(*session) { ended.Add(1); tr.sessionEnded() },
		}, e.pr)
		sessions = append(sessions, got...)
		for range got {
			nodeOf = append(nodeOf, j)
		}
		if err != nil {
			return fmt.Errorf("node %s: %w", nodeName(j), err)
		}
	}
	if len(sessions) == 0 {
		return errors.New("no session opened")
	}
	rep.Target.HeartbeatInterval, rep.Target.HeartbeatTimeout = sessions[0].hbInterval.String(), sessions[0].hbTimeout.String()

	// Every node must see every session (gossip) before pushes cross.
	conv, err := waitClusterSees(ctx, nodes, len(sessions), 15*time.Second)
	if err != nil {
		return err
	}
	rep.metric("sessions", float64(len(sessions)), "", fmt.Sprintf("per node %v", split))
	rep.metric("sessions.seen_by_every_node", conv.Seconds()*1000, "ms", "after the last session was identified (GetCounts on each node)")

	// RSS with the sessions open.
	for j, t := range nodes {
		if v := t.rss(ctx); v > 0 {
			rep.metric(nodeName(j)+".rss", v/(1<<20), "MiB", fmt.Sprintf("%d sessions of its own", split[j]))
		}
	}

	// The cluster's CPU with the sessions open and nothing pushed
	// (heartbeats, gossip heartbeats), to tell what the pushes cost.
	idle := orDefault(cfg.settle, 2*time.Second)
	idleSrv0, idleNats0, idleAt := e.clusterCPU(ctx, false), e.natsCPU(), time.Now()
	sleepUntil(idleAt.Add(idle), ctx.Done())
	idleWall := time.Since(idleAt).Seconds()
	idleCores := -1.0
	if idleSrv1 := e.clusterCPU(ctx, false); idleSrv0 >= 0 && idleSrv1 >= 0 {
		idleCores = (idleSrv1 - idleSrv0) / idleWall
		rep.metric("idle.server_cpu", idleCores, "cores", fmt.Sprintf("all nodes over %v with the sessions open and nothing pushed", idle))
	}
	if idleNats1 := e.natsCPU(); idleNats0 >= 0 && idleNats1 >= 0 {
		rep.metric("idle.nats_cpu", (idleNats1-idleNats0)/idleWall, "cores", "")
	}

	// Phase 1: unicast, cross-node and same-node alternately.
	rng := rand.New(rand.NewPCG(cfg.seed, 0x5eed))
	plan := planUnicast(rng, nodeOf, k, count)
	var stats [2]pushStats // [0] same-node, [1] cross-node
	for i := range stats {
		stats[i].codes = map[string]int{}
	}
	push := func(i int, sched time.Time, measured bool) {
		p := plan[i]
		t := "0" // warm-up pushes are not measured
		if measured {
			t = strconv.FormatInt(sched.UnixNano(), 10)
		}
		via := nodes[p.via]
		body := `{"data":{"t":"` + t + `","i":"` + strconv.Itoa(i) + `"}}`
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+via.httpAddr+"/v1/uids/"+sessions[p.session].uid+"/messages", strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := via.http.Do(req)
		key, delivered := "", int64(-1)
		if err != nil {
			key = "error"
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			key = strconv.Itoa(resp.StatusCode)
			if resp.StatusCode == http.StatusOK {
				var r struct {
					Delivered int64 `json:"delivered"`
				}
				if json.Unmarshal(b, &r) == nil {
					delivered = r.Delivered
				}
			}
		}
		if !measured {
			return
		}
		d := time.Since(sched).Nanoseconds()
		st := &stats[b2i(p.cross)]
		st.mu.Lock()
		defer st.mu.Unlock()
		st.codes[key]++
		st.respLat = append(st.respLat, d)
		if key == "200" {
			st.ok++
			st.delivered += max(0, delivered)
			if delivered != 1 {
				st.mismatch++
			}
		}
	}
	accepted := func() int64 {
		var sum int64
		for i := range stats {
			stats[i].mu.Lock()
			sum += stats[i].delivered
			stats[i].mu.Unlock()
		}
		return sum
	}

	// Warm-up: open the HTTP connections and wake every path once.
	warm := min(count, int(rate)+2)
	openLoop(warm, rate, workers, time.Now(), ctx.Done(), nil, func(i int, sched time.Time) { push(i, sched, false) })
	time.Sleep(200 * time.Millisecond) // let warm-up receipts drain

	e.pr.printf("unicast: %d cross-node + %d same-node pushes, alternately, at %.0f/s in all over REST, %d sessions on %d nodes", perKind, count-perKind, rate, len(sessions), k)
	stop := e.pr.every(time.Second, func() string {
		return fmt.Sprintf("unicast: %d delivered per the API, %d received, %d sessions ended", accepted(), uniRecv.Load(), ended.Load())
	})
	srv0, nodes0, nats0, cpu0 := e.clusterCPU(ctx, false), e.nodeCPUs(ctx), e.natsCPU(), cpuNow()
	lag, issued := openLoop(count, rate, workers, time.Now().Add(10*time.Millisecond), ctx.Done(), nil, func(i int, sched time.Time) { push(i, sched, true) })
	for wait := time.Now().Add(3 * time.Second); uniRecv.Load() < accepted() && time.Now().Before(wait); {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	uniCPU := cpuSince(cpu0)
	uniSrv := e.clusterCPU(ctx, false) - srv0
	nodes1, nats1 := e.nodeCPUs(ctx), e.natsCPU()

	samples := collect(sessions, idxRange(0, int64(count)))
	var lat [2][]int64
	var recv [2]int64
	for _, x := range samples {
		c := b2i(plan[x.idx].cross)
		lat[c] = append(lat[c], x.total)
		recv[c]++
	}
	rep.metric("unicast.pushes", float64(issued), "", fmt.Sprintf("offered %.0f/s for %v, half cross-node, half same-node", rate, dur))
	rep.metric("unicast.achieved_rate", float64(issued)/uniCPU.WallSec, "pushes/s", "both kinds")
	var ls [2]Latency
	lost := int64(0)
	for _, c := range []int{1, 0} {
		name := map[int]string{0: "same", 1: "cross"}[c]
		st := &stats[c]
		st.mu.Lock()
		rep.metric(name+".accepted", float64(st.ok), "", fmt.Sprintf("HTTP statuses %v", st.codes))
		rep.metric(name+".delivered", float64(st.delivered), "", fmt.Sprintf("sum of the API's delivered; %d accepted answers had delivered != 1", st.mismatch))
		rep.metric(name+".received", float64(recv[c]), "", fmt.Sprintf("missing %d", st.delivered-recv[c]))
		lost += st.delivered - recv[c]
		ls[c] = summarize(lat[c])
		rep.latency(name+".latency", ls[c])
		rep.latency(name+".http_response", summarize(st.respLat))
		errs := int64(len(st.respLat)) - st.ok
		pass := st.ok > 0 && errs == 0 && st.mismatch == 0 && recv[c] == st.delivered
		rep.check(fmt.Sprintf("cluster %s-node unicast: every push accepted, delivered 1, received", name), "no error, none lost",
			fmt.Sprintf("%d errors, %d delivered!=1, %d missing", errs, st.mismatch, st.delivered-recv[c]), pass)
		st.mu.Unlock()
	}
	if ls[0].P50Ms > 0 && ls[0].P99Ms > 0 {
		rep.metric("hop.p50_ratio", ls[1].P50Ms/ls[0].P50Ms, "x", "cross-node p50 / same-node p50, same run")
		rep.metric("hop.p99_ratio", ls[1].P99Ms/ls[0].P99Ms, "x", "cross-node p99 / same-node p99, same run")
		rep.metric("hop.p50_added", ls[1].P50Ms-ls[0].P50Ms, "ms", "cross-node p50 - same-node p50")
	}
	tl := summarize(lag)
	rep.latency("unicast.tool_lag", tl)
	rep.cpu("unicast", uniCPU)
	rep.serverCPU("unicast", uniSrv, uniCPU.WallSec)
	e.nodeCPUMetrics("unicast", nodes0, nodes1, nats0, nats1, uniCPU.WallSec)
	if ok := stats[0].ok + stats[1].ok; uniSrv > 0 && ok > 0 {
		rep.metric("unicast.server_cpu_per_push", uniSrv/float64(ok)*1e6, "µs", "CPU of all nodes over the phase / accepted pushes (both kinds; includes heartbeats, gossip, the REST gateway)")
		if idleCores >= 0 {
			rep.metric("unicast.server_cpu_per_push_net", (uniSrv-idleCores*uniCPU.WallSec)/float64(ok)*1e6, "µs", "the same less the idle.server_cpu baseline")
		}
	}
	if tl.P99Ms > 0.2*ls[1].P99Ms {
		rep.note("the tool's own scheduling lag (p99 %.3f ms) is a sizeable part of the cross-node p99; it is included in the latency (open loop)", tl.P99Ms)
	}
	e.pr.printf("unicast: cross %s; same %s", ls[1], ls[0])

	// Phase 2: broadcasts through the first node at saturation.
	pub, err := newPublisher(nodes[0], cfg.payloadBytes)
	if err != nil {
		return err
	}
	defer pub.close()
	live := int64(len(sessions)) - ended.Load()
	e.pr.printf("broadcast: %d broadcasts through %s back to back, window %d, to %d sessions on %d nodes", satCount, nodeName(0), window, live, k)
	nodesB0, natsB0 := e.nodeCPUs(ctx), e.natsCPU()
	sr := saturate(ctx, e.pr, tr, pub, saturation{
		base: bcastBase, count: satCount, window: window, capAt: time.Now().Add(2 * dur),
		srvCPU: func() float64 { return e.clusterCPU(ctx, false) },
	})
	nodesB1, natsB1 := e.nodeCPUs(ctx), e.natsCPU()
	if err := e.heapProfile(); err != nil {
		return err
	}
	brecv, bdeliv := tr.totals(0, sr.sent)
	short := 0
	for j := int64(0); j < sr.sent; j++ {
		if ex := tr.exp[j].Load(); ex > 0 && ex-1 != live {
			short++
		}
	}
	perSec := float64(brecv) / sr.elapsed.Seconds()
	rep.metric("bcast.broadcasts", float64(sr.sent), "", fmt.Sprintf("through %s, window %d, %d errors", nodeName(0), window, sr.errs))
	rep.metric("bcast.delivered", float64(bdeliv), "", fmt.Sprintf("sum of the API's delivered; %d broadcasts had delivered != %d live sessions", short, live))
	rep.metric("bcast.received", float64(brecv), "", fmt.Sprintf("missing %d", bdeliv-brecv))
	for j := range nodes {
		rep.metric("bcast.received."+nodeName(j), float64(bcastRecv[j].Load()), "", fmt.Sprintf("%d sessions there", split[j]))
	}
	rep.metric("bcast.seconds", sr.elapsed.Seconds(), "s", "first send to last receipt")
	rep.metric("bcast.deliveries_per_s", perSec, "deliveries/s", "all nodes")
	rep.perServerCPU("bcast.deliveries_per_server_cpu_s", float64(brecv), sr.srvSec, "deliveries/s")
	if nb := natsB1 - natsB0; natsB0 >= 0 && natsB1 >= 0 && sr.srvSec > 0 {
		rep.metric("bcast.deliveries_per_cluster_cpu_s", float64(brecv)/(sr.srvSec+nb), "deliveries/s", "per second of CPU of the nodes and the NATS server together")
	}
	if t := sr.cpu.UserSec + sr.cpu.SysSec; t > 0 {
		rep.metric("bcast.deliveries_per_tool_cpu_s", float64(brecv)/t, "deliveries/s", "the bench's own capacity: if below the servers', the tool is the limit")
	}
	rep.latency("bcast.latency", summarize(totalsOf(collect(sessions, idxRange(bcastBase, bcastBase+sr.sent)))))
	rep.latency("bcast.broadcast_rpc", summarize(sr.rpc))
	rep.cpu("bcast", sr.cpu)
	rep.serverCPU("bcast", sr.srvSec, sr.cpu.WallSec)
	e.nodeCPUMetrics("bcast", nodesB0, nodesB1, natsB0, natsB1, sr.cpu.WallSec)
	rep.check("cluster broadcast: every broadcast reached every live session on every node", "delivered = live sessions, none lost, no error",
		fmt.Sprintf("%d errors, %d short, %d missing", sr.errs, short, bdeliv-brecv), sr.sent > 0 && sr.errs == 0 && short == 0 && brecv == bdeliv)
	rep.metric("evicted", float64(ended.Load()), "sessions", "sessions that ended during the run")
	rep.check("cluster: no session ended", "0", strconv.FormatInt(ended.Load(), 10), ended.Load() == 0)
	if sr.cpu.Limited {
		rep.note("the broadcast figure is at the bench's CPU limit: the cluster may deliver faster than measured")
	}
	rep.Ends = endTally(sessions)
	e.pr.printf("broadcast: %.0f deliveries/s; unicast lost %d, broadcast lost %d", perSec, lost, bdeliv-brecv)
	return nil
}

// nodeCPUMetrics records each node's (and the NATS server's) CPU over a
// phase, in cores.
func (e *env) nodeCPUMetrics(phase string, before, after []float64, nats0, nats1, wall float64) {
	if wall <= 0 {
		return
	}
	for j := range before {
		if before[j] >= 0 && after[j] >= 0 {
			e.rep.metric(phase+".server_cpu."+nodeName(j), (after[j]-before[j])/wall, "cores", "")
		}
	}
	if nats0 >= 0 && nats1 >= 0 {
		e.rep.metric(phase+".nats_cpu", (nats1-nats0)/wall, "cores", "nats-server (--nats-pid)")
	}
}

// waitClusterSees waits (bounded by limit) until every node's GetCounts
// reports at least want sessions in the cluster, and returns how long that
// took.
func waitClusterSees(ctx context.Context, nodes []*target, want int, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	last := make([]int64, len(nodes))
	for time.Since(start) < limit && ctx.Err() == nil {
		all := true
		for j, t := range nodes {
			n, err := t.counts(ctx)
			if err != nil {
				return 0, err
			}
			last[j] = n
			all = all && n >= int64(want)
		}
		if all {
			return time.Since(start), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("the nodes saw %v sessions in the cluster after %v; want %d each", last, limit, want)
}

// counts returns the cluster's session count as this node sees it
// (GET /v1/counts, answered from its directory).
func (t *target) counts(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.httpAddr+"/v1/counts", nil)
	if err != nil {
		return 0, err
	}
	resp, err := t.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GetCounts on %s: %w", t.httpAddr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GetCounts on %s: HTTP %d: %s", t.httpAddr, resp.StatusCode, b)
	}
	var r struct {
		Sessions json.Number `json:"sessions"` // uint64: a JSON string
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("GetCounts on %s: %w", t.httpAddr, err)
	}
	return r.Sessions.Int64()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
