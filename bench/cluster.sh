#!/usr/bin/env bash
# Reproduces the cluster figures in BENCHMARKS.md ("Cluster (three nodes
# over NATS)").
#
# Builds presenced, presencebench and nats-server (the module this
# repository already requires) from this checkout, then for each round
# (RUNS, default 3) starts a fresh nats-server with JetStream on
# 127.0.0.1:14222 and three presenced nodes a, b, c joined through it
# (gRPC 127.0.0.1:19091-19093, HTTP 127.0.0.1:19081-19083), runs
# `presencebench --scenario cluster` against them and stops everything.
# Each run writes bench/results/cluster-<round>.json (the raw report) and
# .txt (its table); bench/results/CLUSTER-SUMMARY.md gets the medians.
#
# Pinning, on this 2-CPU machine: NATS and the three nodes share CPU
# SERVER_CPU (0), the tool has TOOL_CPU (1) to itself; the same split as
# bench/run.sh, so the cluster gets the one core a lone presenced gets
# there and its figures compare with the single-node ones: what changes is
# the cluster's own cost (the hop, gossip, three processes), not the
# hardware. Give the nodes their own CPUs on a bigger machine with
# SERVER_CPU=0-2 TOOL_CPU=3.
#
# Only 127.0.0.0/8 is used, and the script refuses to start when any of its
# ports is taken. Everything it started is stopped on exit.
#
# Environment: RUNS=3, SESSIONS=3000 (in all, spread evenly), RATE=500
# (pushes/s in all, half cross-node, half same-node), DURATION=20s, COUNT=100
# (broadcasts at saturation), WINDOW=16, SERVER_CPU=0, TOOL_CPU=1,
# OUT=bench/results, QUIET_WAIT=10 (seconds to wait for a quiet machine
# before each run; the reports record how busy it was either way).
# About 2 minutes a round.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local

RUNS=${RUNS:-3}
SESSIONS=${SESSIONS:-3000}
RATE=${RATE:-500}
DURATION=${DURATION:-20s}
COUNT=${COUNT:-100}
WINDOW=${WINDOW:-16}
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
OUT=${OUT:-bench/results}
QUIET_WAIT=${QUIET_WAIT:-10}
NATS_PORT=14222
NAMES=(a b c)
PORTS=("$NATS_PORT" 19091 19092 19093 19081 19082 19083)
GRPC="" HTTP="" # set per node for start_server

BIN=$(mktemp -d)
source bench/lib.sh

require_free_ports "${PORTS[@]}"

echo "== build"
go build -o "$BIN/presenced" ./cmd/presenced
go build -o "$BIN/presencebench" ./cmd/presencebench
go build -o "$BIN/nats-server" github.com/nats-io/nats-server/v2
mkdir -p "$OUT"

# Each node holds a connection per session of its own; the tool holds all.
ulimit -n 20000

NODES_FLAG=""
for i in 1 2 3; do NODES_FLAG+="${NODES_FLAG:+,}127.0.0.1:1909$i/127.0.0.1:1908$i"; done

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- server daemon cluster cmd/presenced || echo ' (server sources modified)')"
	fi
	echo "nproc: $(nproc)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
	echo "go: $(go version)"
	echo "nats-server: $("$BIN/nats-server" --version)"
	echo "kernel: $(uname -r)"
	echo "ulimit -n: $(ulimit -n)"
	echo "nats:  taskset -c $SERVER_CPU nats-server -a 127.0.0.1 -p $NATS_PORT -js -sd \$DIR/js"
	echo "nodes: taskset -c $SERVER_CPU presenced --nats-url nats://127.0.0.1:$NATS_PORT --nats-name a|b|c --grpc-addr 127.0.0.1:1909N --http-addr 127.0.0.1:1908N"
	echo "tool:  taskset -c $TOOL_CPU presencebench --scenario cluster --nodes $NODES_FLAG --sessions $SESSIONS --rate $RATE --duration $DURATION --count $COUNT --window $WINDOW"
} >"$OUT/cluster-machine.txt"
cat "$OUT/cluster-machine.txt"

# start_cluster starts NATS and the three nodes; sets NATS and NODE_PIDS.
start_cluster() {
	require_free_ports "${PORTS[@]}"
	rm -rf "$BIN/js"
	taskset -c "$SERVER_CPU" "$BIN/nats-server" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$BIN/js" >"$BIN/nats.log" 2>&1 &
	NATS=$!
	SRVS+=("$NATS")
	local i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
		sleep 0.1
	done
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; then
		echo "nats-server did not come up:" >&2
		tail -20 "$BIN/nats.log" >&2
		exit 1
	fi
	NODE_PIDS=()
	for i in 1 2 3; do
		GRPC=127.0.0.1:1909$i HTTP=127.0.0.1:1908$i SRV_LOG=${NAMES[i - 1]} \
			start_server "$BIN/presenced" --nats-url "nats://127.0.0.1:$NATS_PORT" --nats-name "${NAMES[i - 1]}"
		NODE_PIDS+=("$SRV")
	done
}

# stop_cluster stops the nodes (they say goodbye over NATS), then NATS.
stop_cluster() {
	stop_pids "${NODE_PIDS[@]}"
	stop_pids "$NATS"
	SRV=""
}

for ((round = 1; round <= RUNS; round++)); do
	wait_quiet
	echo "== cluster round $round: nats-server + nodes a b c / presencebench --scenario cluster"
	start_cluster
	rc=0
	taskset -c "$TOOL_CPU" "$BIN/presencebench" --scenario cluster --nodes "$NODES_FLAG" \
		--server-pids "$(
			IFS=,
			echo "${NODE_PIDS[*]}"
		)" --nats-pid "$NATS" \
		--sessions "$SESSIONS" --rate "$RATE" --duration "$DURATION" --count "$COUNT" --window "$WINDOW" \
		--label "cluster#$round" --out "$OUT/cluster-$round.json" >"$OUT/cluster-$round.txt" || rc=$?
	stop_cluster
	grep -E '^(CHECK|[a-z].*(pass|FAIL)$)' "$OUT/cluster-$round.txt" || true
	if ((rc != 0)); then
		echo "   presencebench exited $rc (see $OUT/cluster-$round.txt)"
		tail -5 "$BIN"/{a,b,c,nats}.log || true
	fi
done

"$BIN/presencebench" --summarize "$OUT"/cluster-[0-9]*.json >"$OUT/CLUSTER-SUMMARY.md"
echo "== medians in $OUT/CLUSTER-SUMMARY.md"
