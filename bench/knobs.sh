#!/usr/bin/env bash
# Knob experiments, tried on `presencebench --serve` (the same daemon.Start
# and defaults as presenced, in a process of its own, pinned like presenced
# in run.sh), from before presenced had flags for them. One run each;
# writes bench/results/knobs-*.json and .txt. presenced now has
# --read-buffer-size, --write-buffer-size, --initial-window-size,
# --initial-conn-window-size and --log-level; bench/compare.sh measures the
# buffer flags on presenced itself, 3 rounds interleaved.
#
#   idle, one connection per session: grpc's default transport buffers
#        against 4 KiB read and write buffers (daemon.Config ReadBufferSize,
#        WriteBufferSize)
#   churn: per-session logging at Info (as presenced) against no logging
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
OUT=${OUT:-bench/results}
GRPC=127.0.0.1:19090
HTTP=127.0.0.1:19080

BIN=$(mktemp -d)
source bench/lib.sh
go build -o "$BIN/presencebench" ./cmd/presencebench
mkdir -p "$OUT"
ulimit -n 20000

# run NAME "SERVE FLAGS" BENCH FLAGS...
run() {
	local name=$1 serveflags=$2
	shift 2
	echo "== $name: presencebench --serve $serveflags / presencebench $*"
	# shellcheck disable=SC2086
	SRV_LOG=serve start_server "$BIN/presencebench" --serve --deadline 10m $serveflags
	taskset -c "$TOOL_CPU" "$BIN/presencebench" --grpc-addr "$GRPC" --http-addr "$HTTP" --server-pid "$SRV" \
		--label "$name#1" --out "$OUT/knobs-$name.json" "$@" >"$OUT/knobs-$name.txt" || true
	stop_server
	grep -E '(pass|FAIL)$' "$OUT/knobs-$name.txt" || true
}

run idle-default "" --scenario idle --sessions 10000
run idle-buffers-4k "--srv-read-buffer 4096 --srv-write-buffer 4096" --scenario idle --sessions 10000
run churn-log-info "--srv-log info" --scenario churn --workers 32 --count 50000 --duration 10s
run churn-log-off "--srv-log off" --scenario churn --workers 32 --count 50000 --duration 10s
