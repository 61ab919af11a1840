#!/usr/bin/env bash
# Profiles the server during the idle and fanout scenarios.
#
# presenced has no pprof endpoint, so the server here is `presencebench
# --serve`: the same daemon.Start with the same defaults (and the same
# per-session logging) in a process of its own, plus net/http/pprof on a
# loopback port. It is pinned like presenced in run.sh (taskset -c
# $SERVER_CPU); the bench drives it from $TOOL_CPU. Writes
# bench/profiles/{idle-heap,fanout-cpu,fanout-heap,unicast-cpu,unicast-allocs}.pb.gz
# and a text top of each (go tool pprof -top).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
OUT=${OUT:-bench/profiles}
GRPC=127.0.0.1:19090
HTTP=127.0.0.1:19080
PPROF=127.0.0.1:19081

BIN=$(mktemp -d)
source bench/lib.sh
go build -o "$BIN/presencebench" ./cmd/presencebench
mkdir -p "$OUT"
ulimit -n 20000

# serve starts the profiled server: presencebench --serve with pprof.
serve() { SRV_LOG=serve start_server "$BIN/presencebench" --serve --pprof-addr "$PPROF" --deadline 10m; }

# ONLY="idle fanout unicast" picks the profiles to take (all by default);
# FANOUT_FLAGS adds presencebench flags to the fanout run (for example
# "--streams-per-conn 100").
ONLY=${ONLY:-idle fanout unicast}
want() { [[ " $ONLY " == *" $1 "* ]]; }

if want idle; then
echo "== idle: heap profile with 10,000 sessions open"
serve
taskset -c "$TOOL_CPU" "$BIN/presencebench" --scenario idle --grpc-addr "$GRPC" --http-addr "$HTTP" --server-pid "$SRV" \
	--sessions 10000 --settle 15s >"$BIN/idle.txt" 2>"$BIN/idle.err" &
B=$!
wait_for "$BIN/idle.err" "settling for"
sleep 5
curl -fsS -m 30 "http://$PPROF/debug/pprof/heap?gc=1" -o "$OUT/idle-heap.pb.gz"
wait "$B" || true
stop_server

fi

if want fanout; then
echo "== fanout: CPU profile of the saturation phase, heap at its end"
serve
taskset -c "$TOOL_CPU" "$BIN/presencebench" --scenario fanout --grpc-addr "$GRPC" --http-addr "$HTTP" --server-pid "$SRV" \
	--sessions 10000 --rate 2 --duration 5s --count 300 ${FANOUT_FLAGS:-} >"$BIN/fanout.txt" 2>"$BIN/fanout.err" &
B=$!
wait_for "$BIN/fanout.err" "saturation: 300 broadcasts"
curl -fsS -m 60 "http://$PPROF/debug/pprof/profile?seconds=15" -o "$OUT/fanout-cpu.pb.gz"
curl -fsS -m 30 "http://$PPROF/debug/pprof/heap" -o "$OUT/fanout-heap.pb.gz"
wait "$B" || true
stop_server

fi

if want unicast; then
echo "== unicast: CPU and allocation profiles of 15 s of the 500/s REST pushes"
serve
taskset -c "$TOOL_CPU" "$BIN/presencebench" --scenario unicast --grpc-addr "$GRPC" --http-addr "$HTTP" --server-pid "$SRV" \
	--sessions 10000 --rate 500 --duration 25s >"$BIN/unicast.txt" 2>"$BIN/unicast.err" &
B=$!
wait_for "$BIN/unicast.err" "unicast: .* pushes at"
sleep 2
# A heap profile holds the allocations too (alloc_space), as of the last
# GC; gc=1 forces one first (net/http/pprof honours it for "heap" only),
# so the difference of the two snapshots is what the window allocated.
curl -fsS -m 30 "http://$PPROF/debug/pprof/heap?gc=1" -o "$BIN/allocs-before.pb.gz"
curl -fsS -m 5 "http://$HTTP/metrics" | grep -E '^go_(memstats_alloc_bytes_total|gc_cycles_total_gc_cycles_total|memstats_mallocs_total) ' >"$BIN/metrics-before.txt" || true
curl -fsS -m 60 "http://$PPROF/debug/pprof/profile?seconds=15" -o "$OUT/unicast-cpu.pb.gz"
curl -fsS -m 5 "http://$HTTP/metrics" | grep -E '^go_(memstats_alloc_bytes_total|gc_cycles_total_gc_cycles_total|memstats_mallocs_total) ' >"$BIN/metrics-after.txt" || true
curl -fsS -m 30 "http://$PPROF/debug/pprof/heap?gc=1" -o "$BIN/allocs-after.pb.gz"
wait "$B" || true
stop_server
# What the 15 s allocated: the difference of two cumulative profiles.
go tool pprof -proto -base "$BIN/allocs-before.pb.gz" "$BIN/allocs-after.pb.gz" >"$OUT/unicast-allocs.pb.gz" 2>/dev/null
go tool pprof -sample_index=alloc_space -top -nodecount=40 "$OUT/unicast-allocs.pb.gz" >"$OUT/unicast-allocs.top.txt" 2>/dev/null
go tool pprof -top -nodecount=40 "$OUT/unicast-cpu.pb.gz" >"$OUT/unicast-cpu.top.txt" 2>/dev/null
go tool pprof -top -cum -nodecount=60 "$OUT/unicast-cpu.pb.gz" >"$OUT/unicast-cpu.cum.txt" 2>/dev/null
cp "$BIN/unicast.txt" "$OUT/unicast-run.txt"
paste "$BIN/metrics-before.txt" "$BIN/metrics-after.txt" | awk '{printf "%s: %.0f per second over the CPU profile\n", $1, ($4-$2)/15}' >"$OUT/unicast-rates.txt"
fi

for p in idle-heap fanout-heap; do
	want "${p%-heap}" || continue
	go tool pprof -sample_index=inuse_space -top -nodecount=25 "$OUT/$p.pb.gz" >"$OUT/$p.top.txt" 2>/dev/null
done
if want fanout; then
go tool pprof -top -nodecount=40 "$OUT/fanout-cpu.pb.gz" >"$OUT/fanout-cpu.top.txt" 2>/dev/null
go tool pprof -top -cum -nodecount=40 "$OUT/fanout-cpu.pb.gz" >"$OUT/fanout-cpu.cum.txt" 2>/dev/null
cp "$BIN/fanout.txt" "$OUT/fanout-run.txt"
fi
if want idle; then cp "$BIN/idle.txt" "$OUT/idle-run.txt"; fi
echo "== wrote $OUT"
