#!/usr/bin/env bash
# Before/after runs of a change to the load tool itself: presencebench
# built from BEFORE (a git revision) against presencebench built from this
# checkout, both driving the same presenced (this checkout's), interleaved
# run by run so machine noise falls on both alike. Pinned and limited as
# run.sh does; writes $OUT/tool-{before,after}-<scenario>-<round>.json and
# .txt, and $OUT/SUMMARY.md with the medians per tool.
#
# Only 127.0.0.0/8 is used (127.0.0.1:19090 gRPC, 127.0.0.1:19080 HTTP).
#
# Environment: BEFORE (required), RUNS=3, OUT=bench/results/tool-compare,
# SERVER_CPU=0, TOOL_CPU=1, QUIET_WAIT=10, ONLY="unicast unicast-1k"
# (also: fanout-mux, fanout-raw, fanout-mux-raw, slow-long, slow-long-25,
# the same runs as run.sh's).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local

: "${BEFORE:?set BEFORE to the git revision of the tool to compare against}"
RUNS=${RUNS:-3}
OUT=${OUT:-bench/results/tool-compare}
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-10}
ONLY=${ONLY:-"unicast unicast-1k"}
GRPC=127.0.0.1:19090
HTTP=127.0.0.1:19080

BIN=$(mktemp -d)
source bench/lib.sh

before_rev=$(git rev-parse --short "$BEFORE")
echo "== build: tool before $before_rev, tool after $(git rev-parse --short HEAD) (+ working tree), server this checkout"
build_at "$before_rev" presencebench "$BIN/presencebench-before"
go build -o "$BIN/presencebench-after" ./cmd/presencebench
go build -o "$BIN/presenced" ./cmd/presenced
mkdir -p "$OUT"
ulimit -n 20000
require_free_port
{
	machine_info
	echo "tool before: $before_rev ($BEFORE)"
	echo "tool after: $(git rev-parse --short HEAD) (+ working tree)"
	echo "server: taskset -c $SERVER_CPU presenced --grpc-addr $GRPC --http-addr $HTTP (this checkout)"
	echo "tool:   taskset -c $TOOL_CPU presencebench-{before,after} ..."
	cpu_note
} >"$OUT/machine.txt"

want() { [[ " $ONLY " == *" $1 "* ]]; }

# bench TOOL SCENARIO ROUND [SERVER_FLAGS] -- BENCH_FLAGS (run_one runs $BIN/presencebench)
bench() {
	local tool=$1 scenario=$2 round=$3
	shift 3
	cp "$BIN/presencebench-$tool" "$BIN/presencebench"
	run_one "tool-$tool-$scenario-$round" "tool-$tool#$round" "$BIN/presenced" "$@"
}

for ((round = 1; round <= RUNS; round++)); do
	for tool in before after; do
		want unicast && bench "$tool" unicast "$round" -- --scenario unicast --sessions 10000 --rate 500 --duration 20s
		want unicast-1k && bench "$tool" unicast-1k "$round" -- --scenario unicast --sessions 1000 --rate 500 --duration 20s
		want fanout-mux && bench "$tool" fanout-mux "$round" -- --scenario fanout --sessions 10000 --rate 2 --duration 15s --count 300 --window 16 --streams-per-conn 100
		want fanout-raw && bench "$tool" fanout-raw "$round" -- --scenario fanout --sessions 10000 --rate 2 --duration 15s --count 300 --window 16 --client raw
		want fanout-mux-raw && bench "$tool" fanout-mux-raw "$round" -- --scenario fanout --sessions 10000 --streams-per-conn 100 --rate 2 --duration 15s --count 300 --window 16 --client raw
		want slow-long && bench "$tool" slow-long "$round" --queue-max-messages 1024 --queue-max-bytes 2097152 -- \
			--scenario slow --sessions 1000 --slow-frac 0.01 --rate 50 --payload-bytes 1024 --baseline 20s --duration 40s --client raw
		want slow-long-25 && bench "$tool" slow-long-25 "$round" --queue-max-messages 1024 --queue-max-bytes 2097152 -- \
			--scenario slow --sessions 1000 --slow-frac 0.01 --rate 25 --payload-bytes 1024 --baseline 20s --duration 60s --client raw
	done
done

"$BIN/presencebench-after" --summarize "$OUT"/tool-*-[0-9]*.json >"$OUT/SUMMARY.md"
echo "== medians in $OUT/SUMMARY.md"
