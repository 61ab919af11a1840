#!/usr/bin/env bash
# Goroutine stack sizes of an idle presenced, per kind of goroutine.
#
# Starts presenced (defaults, pinned like run.sh) with GOTRACEBACK=system,
# opens SESSIONS (default 10000) idle sessions with presencebench, and
# during the settle sends the server SIGQUIT: its goroutine dump then gives
# each frame's sp and fp, from which bench/stacks.py tells, per kind of
# goroutine, the stack in use while blocked, the smallest stack Go could
# shrink it to, and the stack it has. Writes OUT (default
# bench/profiles/idle-stacks.txt); SERVER_ARGS are presenced flags (e.g.
# "--transport lite"). The bench run itself ends in an error
# (its server is gone): only the dump is used.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
SESSIONS=${SESSIONS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
OUT=${OUT:-bench/profiles/idle-stacks.txt}
GRPC=127.0.0.1:19090
HTTP=127.0.0.1:19080
BIN=$(mktemp -d)
source bench/lib.sh
go build -o "$BIN/presenced" ./cmd/presenced
go build -o "$BIN/presencebench" ./cmd/presencebench
ulimit -n 20000
require_free_port
# The goroutine dump goes to the server's stderr, $BIN/dump.log.
SERVER_ENV=GOTRACEBACK=system SRV_LOG=dump start_server "$BIN/presenced" ${SERVER_ARGS:-}
taskset -c "$TOOL_CPU" "$BIN/presencebench" --grpc-addr "$GRPC" --http-addr "$HTTP" --server-pid "$SRV" \
	--scenario idle --sessions "$SESSIONS" >/dev/null 2>"$BIN/bench.err" &
B=$!
wait_for "$BIN/bench.err" "settling for"
sleep 8 # pings and a GC or two, as in the idle runs
kill -QUIT "$SRV"
wait "$SRV" || true
wait "$B" || true
{
	echo "# bench/stacks.sh: presenced ${SERVER_ARGS:-}at $(git rev-parse --short HEAD), $SESSIONS idle sessions, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	python3 bench/stacks.py "$BIN/dump.log" "$SESSIONS"
} | tee "$OUT"
