#!/usr/bin/env bash
# Reproduces the runs published in BENCHMARKS.md.
#
# Builds presenced and presencebench from this checkout, then for each round
# (RUNS, default 3) and each scenario starts a fresh presenced pinned to one
# CPU (taskset -c $SERVER_CPU), runs presencebench pinned to another
# (taskset -c $TOOL_CPU) and stops the server. Each run writes
# bench/results/<scenario>-<round>.json (the raw report) and .txt (its
# table); bench/results/SUMMARY.md gets the medians at the end.
#
# Only 127.0.0.0/8 is used: the server listens on 127.0.0.1:19090 (gRPC) and
# 127.0.0.1:19080 (HTTP), away from the default ports other tests use.
#
# Environment: RUNS=3, ONLY="idle idle-mux fanout fanout-bdp fanout-mux
# unicast unicast-bdp silent slow-long slow-long-25 churn" (slow at 50/s and
# 25/s with 20 s phases, the published slow runs since the sixth sitting;
# and, when named, the diagnostics unicast-gcoff and unicast-1k, the older
# slow and slow-25 with 5 s phases, and the runs with the bench's
# raw client fanout-raw, fanout-mux-raw, unicast-raw, churn-raw, and churn-long, twice
# churn's cycles, to tell a leak, which grows with them, from a constant), SERVER_ARGS (presenced flags
# for every run, e.g. "--transport lite"), SERVER_CPU=0, TOOL_CPU=1, OUT=bench/results, QUIET_WAIT=10
# (seconds to wait, before each run, for other processes to leave the CPUs
# alone; the reports record how busy the machine was either way),
# CPU_GUARANTEE=1 (root only: the server and the tool each in a cpu cgroup
# at the largest weight, so the machine's other tasks, whatever their nice,
# cannot take their cores; see bench/lib.sh).
# BENCH_COMMIT names the server's commit when run outside a git checkout.
# Roughly 15-20 minutes on a quiet machine; longer when other work shares the CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local

RUNS=${RUNS:-3}
ONLY=${ONLY:-"idle idle-mux fanout fanout-bdp fanout-mux unicast unicast-bdp silent slow-long slow-long-25 churn"}
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
OUT=${OUT:-bench/results}
QUIET_WAIT=${QUIET_WAIT:-10}
GRPC=127.0.0.1:19090
HTTP=127.0.0.1:19080

BIN=$(mktemp -d)
source bench/lib.sh

echo "== build"
go build -o "$BIN/presenced" ./cmd/presenced
go build -o "$BIN/presencebench" ./cmd/presencebench
mkdir -p "$OUT"

# One server holds a connection per session: raise the open-file limit.
ulimit -n 20000

require_free_port

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	if [[ -n "${BENCH_COMMIT:-}" ]]; then
		echo "commit: $BENCH_COMMIT"
	elif git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- server daemon cmd/presenced || echo ' (server sources modified)')"
	fi
	echo "nproc: $(nproc)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
	echo "go: $(go version)"
	echo "kernel: $(uname -r)"
	echo "ulimit -n: $(ulimit -n)"
	echo "server: taskset -c $SERVER_CPU presenced --grpc-addr $GRPC --http-addr $HTTP ${SERVER_ARGS:-}..."
	echo "tool:   taskset -c $TOOL_CPU presencebench ..."
	cpu_note
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

# bench NAME ROUND SERVER_FLAGS -- BENCH_FLAGS
bench() {
	local name=$1 round=$2
	shift 2
	run_one "$name-$round" "${LABEL:-default}#$round" "$BIN/presenced" ${SERVER_ARGS:-} "$@"
}

want() { [[ " $ONLY " == *" $1 "* ]]; }

for ((round = 1; round <= RUNS; round++)); do
	want idle && bench idle "$round" -- --scenario idle --sessions 10000
	want idle-mux && bench idle-mux "$round" -- --scenario idle --sessions 10000 --streams-per-conn 100
	want fanout && bench fanout "$round" -- --scenario fanout --sessions 10000 --rate 2 --duration 15s --count 300 --window 16
	want fanout-bdp && bench fanout-bdp "$round" -- --scenario fanout --sessions 10000 --rate 2 --duration 15s --count 300 --window 16 --client-bdp
	want fanout-mux && bench fanout-mux "$round" -- --scenario fanout --sessions 10000 --streams-per-conn 100 --rate 2 --duration 15s --count 300 --window 16
	want unicast && bench unicast "$round" -- --scenario unicast --sessions 10000 --rate 500 --duration 20s
	# The same with the bench's own minimal HTTP/2 client (--client raw),
	# whose cost per received message is about half grpc-go's, for when
	# the tool is the limit (only when named in ONLY).
	want fanout-raw && bench fanout-raw "$round" -- --scenario fanout --sessions 10000 --rate 2 --duration 15s --count 300 --window 16 --client raw
	want fanout-mux-raw && bench fanout-mux-raw "$round" -- --scenario fanout --sessions 10000 --streams-per-conn 100 --rate 2 --duration 15s --count 300 --window 16 --client raw
	want unicast-raw && bench unicast-raw "$round" -- --scenario unicast --sessions 10000 --rate 500 --duration 20s --client raw
	# Diagnostics, not targets (only when named in ONLY): the unicast run
	# with the server's GC off (what the tail is without a GC mark in the
	# window) and with 1,000 sessions instead of 10,000.
	want unicast-gcoff && LABEL=server-gogc-off SERVER_ENV=GOGC=off bench unicast-gcoff "$round" -- --scenario unicast --sessions 10000 --rate 500 --duration 20s
	want unicast-1k && bench unicast-1k "$round" -- --scenario unicast --sessions 1000 --rate 500 --duration 20s
	want unicast-bdp && bench unicast-bdp "$round" -- --scenario unicast --sessions 10000 --rate 500 --duration 20s --client-bdp
	want silent && bench silent "$round" --heartbeat-interval 1s --heartbeat-timeout 3s --reap-interval 1s -- \
		--scenario silent --sessions 1000 --silent-frac 0.1 --reap-interval 1s
	# The older slow runs, 5 s phases (only when named in ONLY): their p99
	# ratio swung both ways between runs of one build.
	want slow && bench slow "$round" -- --scenario slow --sessions 1000 --slow-frac 0.01 --rate 50 --payload-bytes 1024 --baseline 5s --duration 20s
	want slow-25 && bench slow-25 "$round" -- --scenario slow --sessions 1000 --slow-frac 0.01 --rate 25 --payload-bytes 1024 --baseline 5s --duration 20s
	# The published slow runs, at 50/s and 25/s, with phases long enough
	# for a p99 to hold many of the machine's spikes: a queue of 1,024
	# frames keeps the stalled sessions ≈22 s (50/s), against a 20 s
	# baseline; the readers on the raw client (the stalled ones stay on
	# grpc-go).
	want slow-long && bench slow-long "$round" --queue-max-messages 1024 --queue-max-bytes 2097152 -- \
		--scenario slow --sessions 1000 --slow-frac 0.01 --rate 50 --payload-bytes 1024 --baseline 20s --duration 40s --client raw
	want slow-long-25 && bench slow-long-25 "$round" --queue-max-messages 1024 --queue-max-bytes 2097152 -- \
		--scenario slow --sessions 1000 --slow-frac 0.01 --rate 25 --payload-bytes 1024 --baseline 20s --duration 60s --client raw
	want churn && bench churn "$round" -- --scenario churn --workers 32 --count 50000 --duration 10s
	want churn-long && bench churn-long "$round" -- --scenario churn --workers 32 --count 100000 --duration 20s
	want churn-raw && bench churn-raw "$round" -- --scenario churn --workers 32 --count 50000 --duration 10s --client raw
done

# The cluster runs (bench/cluster.sh) have their own summary.
find "$OUT" -maxdepth 1 -name '*-[0-9]*.json' ! -name 'cluster-*' -print0 | sort -z | xargs -0 "$BIN/presencebench" --summarize >"$OUT/SUMMARY.md"
echo "== medians in $OUT/SUMMARY.md"
