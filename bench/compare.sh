#!/usr/bin/env bash
# Before/after runs in one session: presenced built from BEFORE (a git
# revision) against presenced built from this checkout, plus the transport
# buffer knobs of this checkout's presenced, with the scenarios of each
# round interleaved so machine noise falls on both sides alike.
#
# Each run starts a fresh server pinned to one CPU (taskset -c $SERVER_CPU)
# and the bench (this checkout's) pinned to another, as run.sh does, and
# writes $OUT/<variant>-<scenario>-<round>.json and .txt;
# $OUT/SUMMARY.md gets the medians per variant at the end.
#
# Only 127.0.0.0/8 is used (127.0.0.1:19090 gRPC, 127.0.0.1:19080 HTTP).
#
# Environment: BEFORE (required, e.g. main), RUNS=3, OUT=bench/results/compare,
# SERVER_CPU=0, TOOL_CPU=1, QUIET_WAIT=10, ONLY="idle fanout fanout-mux"
# (unicast too, when named),
# IDLE_VARIANTS="before after after-buf8k after-buf4k",
# MUX_VARIANTS="after after-buf4k" (the variants of fanout-mux),
# FANOUT_VARIANTS="before after", UNICAST_VARIANTS="before after",
# CHURN_VARIANTS="before after", SLOW_VARIANTS="before after" (churn and
# slow run only when named in ONLY).
# Variants "lite" and "grpc" are this checkout's presenced with
# --transport lite (the default since the third sitting) and grpc.
# BENCH_ARGS: presencebench flags added to every run (e.g. "--client raw").
# About 8 minutes per round on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local

: "${BEFORE:?set BEFORE to the git revision to compare against, e.g. BEFORE=main}"
RUNS=${RUNS:-3}
OUT=${OUT:-bench/results/compare}
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-10}
ONLY=${ONLY:-"idle fanout fanout-mux"}
IDLE_VARIANTS=${IDLE_VARIANTS:-"before after after-buf8k after-buf4k"}
MUX_VARIANTS=${MUX_VARIANTS:-"after after-buf4k"}
FANOUT_VARIANTS=${FANOUT_VARIANTS:-"before after"}
UNICAST_VARIANTS=${UNICAST_VARIANTS:-"before after"}
CHURN_VARIANTS=${CHURN_VARIANTS:-"before after"}
SLOW_VARIANTS=${SLOW_VARIANTS:-"before after"}
GRPC=127.0.0.1:19090
HTTP=127.0.0.1:19080

BIN=$(mktemp -d)
source bench/lib.sh

before_rev=$(git rev-parse --short "$BEFORE")
after_rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- server daemon cmd/presenced || echo '+modified')"
echo "== build: before $before_rev, after $after_rev"
build_at "$before_rev" presenced "$BIN/presenced-before"
go build -o "$BIN/presenced-after" ./cmd/presenced
go build -o "$BIN/presencebench" ./cmd/presencebench
mkdir -p "$OUT"
ulimit -n 20000

require_free_port
{
	machine_info
	echo "before: $before_rev ($BEFORE)"
	echo "after: $after_rev"
	echo "server: taskset -c $SERVER_CPU presenced-{before,after} --grpc-addr $GRPC --http-addr $HTTP ..."
	echo "tool:   taskset -c $TOOL_CPU presencebench ..."
	cpu_note
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

# bench VARIANT SCENARIO ROUND -- BENCH_FLAGS
bench() {
	local variant=$1 scenario=$2 round=$3
	shift 4
	local bin="$BIN/presenced-after" srvflags=()
	case $variant in
	before) bin="$BIN/presenced-before" ;;
	after) ;;
	after-buf8k) srvflags=(--read-buffer-size 8192 --write-buffer-size 8192) ;;
	after-buf4k) srvflags=(--read-buffer-size 4096 --write-buffer-size 4096) ;;
	lite) srvflags=(--transport lite) ;;
	grpc) srvflags=(--transport grpc) ;;
	*) echo "unknown variant $variant" >&2; exit 1 ;;
	esac
	run_one "$variant-$scenario-$round" "$variant#$round" "$bin" "${srvflags[@]}" -- "$@" ${BENCH_ARGS:-}
}

want() { [[ " $ONLY " == *" $1 "* ]]; }

IDLE=(--scenario idle --sessions 10000)
FANOUT=(--scenario fanout --sessions 10000 --rate 2 --duration 15s --count 300 --window 16)
for ((round = 1; round <= RUNS; round++)); do
	if want idle; then
		for v in $IDLE_VARIANTS; do
			bench "$v" idle "$round" -- "${IDLE[@]}"
		done
	fi
	if want fanout; then
		for v in $FANOUT_VARIANTS; do
			bench "$v" fanout "$round" -- "${FANOUT[@]}"
		done
	fi
	if want unicast; then
		for v in $UNICAST_VARIANTS; do
			bench "$v" unicast "$round" -- --scenario unicast --sessions 10000 --rate 500 --duration 20s
		done
	fi
	if want churn; then
		for v in $CHURN_VARIANTS; do
			bench "$v" churn "$round" -- --scenario churn --workers 32 --count 50000 --duration 10s
		done
	fi
	if want slow; then
		for v in $SLOW_VARIANTS; do
			bench "$v" slow "$round" -- --scenario slow --sessions 1000 --slow-frac 0.01 --rate 50 --payload-bytes 1024 --baseline 5s --duration 20s
		done
	fi
	if want fanout-mux; then
		for v in $MUX_VARIANTS; do
			bench "$v" fanout-mux "$round" -- "${FANOUT[@]}" --streams-per-conn 100
		done
	fi
done

"$BIN/presencebench" --summarize "$OUT"/*-[0-9]*.json >"$OUT/SUMMARY.md"
echo "== medians in $OUT/SUMMARY.md"
