#!/usr/bin/env bash
# The browser test: a real headless chromium (Debian's, no download) runs
# the debug console against a real server on 127.0.0.1, through pushes and
# two server restarts (see test.mjs). Prints PASS or FAIL; screenshots and
# the page and server logs go to web/test/artifacts/.
#
# Needs: node, `npm ci` done in web/test, chromium at $CHROMIUM
# (apt-get install chromium), curl, go.
#
# The server is the real presenced: $PRESENCED if set, else built from
# ./cmd/presenced, on 127.0.0.1:$PORT (HTTP) and 127.0.0.1:$GRPC_PORT
# (gRPC) with short heartbeats (the freeze step waits for the page to
# notice a silent server) and short shutdown hints. SERVER_CMD overrides
# the whole command line: anything serving the page at /, the bridge at
# /v1/connect, the REST API under /v1/ and /healthz on $BASE_URL, and
# stopping gracefully on SIGTERM.
#
# Bounded: node is killed after 75 s, each server start waits at most 15 s
# and each stop 10 s (presenced's own --shutdown-timeout is 5 s here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
start_ms=$(date +%s%3N)
elapsed() { local ms=$(($(date +%s%3N) - start_ms)); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }

PORT=${PORT:-18480}
GRPC_PORT=${GRPC_PORT:-18490}
export BASE_URL=${BASE_URL:-http://127.0.0.1:$PORT}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export ARTIFACTS="$here/artifacts"
export STATE_DIR
STATE_DIR=$(mktemp -d -t presence-webtest.XXXXXX)
export SERVER_CTL="$here/server.sh"
node_pid=""

fail() { echo "FAIL: $*"; exit 1; }

cleanup() {
	local rc=$?
	if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
		kill -TERM -- "-$node_pid" 2>/dev/null || true
		sleep 1
		kill -KILL -- "-$node_pid" 2>/dev/null || true
	fi
	# Playwright starts chromium in a process group of its own and closes
	# it when node exits; a chromium left by a node killed hard still holds
	# this run's profile directory, which names it.
	local pids
	pids=$(pgrep -f -- "--user-data-dir=$STATE_DIR/profile-" || true)
	[ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
	bash "$SERVER_CTL" stop || true
	[ -f "$STATE_DIR/server.log" ] && cp "$STATE_DIR/server.log" "$ARTIFACTS/server.log"
	rm -rf "$STATE_DIR"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
command -v node >/dev/null || fail "node not found"
command -v curl >/dev/null || fail "curl not found"
[ -x "$CHROMIUM" ] || fail "no chromium at $CHROMIUM (apt-get install chromium)"
[ -d "$here/node_modules/playwright-core" ] || fail "playwright-core missing: run npm ci in web/test"
echo "browser test: $("$CHROMIUM" --version 2>/dev/null | head -1), node $(node --version), $BASE_URL"

echo "--- presence.js unit tests (node --test, fake WebSocket)"
if ! node --test "$here/presence.test.mjs" >"$ARTIFACTS/unit.txt" 2>&1; then
	cat "$ARTIFACTS/unit.txt"
	fail "presence.js unit tests"
fi
grep -E '^# (pass|fail) ' "$ARTIFACTS/unit.txt" | tr '\n' ' '; echo

if [ -z "${SERVER_CMD:-}" ]; then
	presenced=${PRESENCED:-}
	if [ -z "$presenced" ]; then
		presenced="$STATE_DIR/presenced"
		(cd "$root" && go build -o "$presenced" ./cmd/presenced) || fail "building presenced"
	fi
	[ -x "$presenced" ] || fail "no presenced binary at $presenced"
	SERVER_CMD="$presenced --http-addr 127.0.0.1:$PORT --grpc-addr 127.0.0.1:$GRPC_PORT --heartbeat-interval 500ms --heartbeat-timeout 1500ms --reap-interval 500ms --shutdown-reconnect-min 200ms --shutdown-reconnect-jitter 300ms --shutdown-timeout 5s"
fi
export SERVER_CMD
echo "server: $SERVER_CMD"
bash "$SERVER_CTL" start || fail "the server did not start"

# node in a process group of its own, so cleanup can end it and what it
# started; bounded by timeout.
set +e
setsid timeout -k 5 75 node "$here/test.mjs" &
node_pid=$!
wait "$node_pid"
rc=$?
set -e
node_pid=""
if [ "$rc" -eq 0 ]; then
	echo "PASS: browser test ($(elapsed)); screenshots in web/test/artifacts/"
	echo "browser: 1 passed, 0 failed"
else
	[ "$rc" -eq 124 ] && echo "the browser test timed out"
	echo "--- server log (last 30 lines)"; tail -30 "$STATE_DIR/server.log" 2>/dev/null || true
	echo "FAIL: browser test (exit $rc, $(elapsed)); see web/test/artifacts/"
	echo "browser: 0 passed, 1 failed"
	exit 1
fi
