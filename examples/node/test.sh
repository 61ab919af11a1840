#!/usr/bin/env bash
# End-to-end test of the Node.js client against a real presenced, on
# 127.0.0.1 only:
#   1. build presenced, start it with a 1 s heartbeat interval / 4 s timeout;
#   2. start client.js as uid node-alice and wait for "identified";
#   3. let it outlive the heartbeat timeout (its Pings keep the session alive);
#   4. push to node-alice and broadcast over REST with curl: each reports
#      delivered 1, and the client prints both pushes with the exact data;
#   5. stop presenced (Goodbye SHUTDOWN with a reconnect hint), start it again
#      on the same ports: the client reconnects and receives a new push;
#   6. SIGTERM the client: it exits 0.
# Prints PASS or FAIL as its last line; exit status 0 only on PASS.
# Needs: go, node >= 20, npm (only when node_modules is missing), curl.
set -euo pipefail
export GOTOOLCHAIN=local

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/presence-node-test.XXXXXX")
srv_pid=""
cli_pid=""
passed=0
t0=0

log() { printf 'test.sh [%ss]: %s\n' "$SECONDS" "$*" >&2; }

# stop PID: SIGTERM, wait at most 5 s, then SIGKILL.
stop() {
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop "$cli_pid"
	stop "$srv_pid"
	if [ "$passed" = 1 ] && [ "$rc" = 0 ]; then
		rm -rf "$tmp"
		echo "PASS: examples/node client identified, heartbeated, received a uid push and a broadcast, reconnected after a server restart ($((SECONDS - t0))s after setup, ${SECONDS}s in all)"
	else
		for f in client.out client.err presenced.log presenced2.log; do
			[ -s "$tmp/$f" ] || continue
			echo "----- $f (last 40 lines)" >&2
			tail -n 40 "$tmp/$f" >&2
		done
		rm -rf "$tmp"
		echo "FAIL: examples/node end-to-end test (exit $rc after ${SECONDS}s; see the messages above)"
		[ "$rc" != 0 ] || rc=1
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

fail() {
	log "FAIL: $*"
	exit 1
}

# ---- prerequisites (npm ci, the fetch and the build are not part of the test's time budget)
command -v go >/dev/null || fail "go is not on PATH"
command -v node >/dev/null || fail "node is not on PATH"
command -v curl >/dev/null || fail "curl is not on PATH"
if [ ! -d "$here/node_modules/@grpc/grpc-js" ] || [ ! -d "$here/node_modules/@grpc/proto-loader" ]; then
	log "node_modules missing: npm ci"
	(cd "$here" && timeout 300 npm ci --ignore-scripts --no-audit --no-fund) || fail "npm ci failed"
fi
if [ ! -f "$root/third_party/googleapis/google/api/annotations.proto" ]; then
	log "google/api protos missing: scripts/fetch-googleapis.sh"
	timeout 300 "$root/scripts/fetch-googleapis.sh" || fail "scripts/fetch-googleapis.sh failed"
fi
log "building presenced"
(cd "$root" && timeout 300 go build -o "$tmp/presenced" ./cmd/presenced) || fail "go build ./cmd/presenced failed"
log "built presenced"
t0=$SECONDS # the test proper starts here

# ---- helpers

# free_ports prints two distinct free loopback TCP ports.
free_ports() {
	node -e '
		const net = require("node:net");
		const a = net.createServer().listen(0, "127.0.0.1", () => {
			const b = net.createServer().listen(0, "127.0.0.1", () => {
				console.log(a.address().port, b.address().port);
				a.close(); b.close();
			});
		});'
}

# start_server LOG: starts presenced on $grpc_port/$http_port and waits (at
# most 10 s) for its "presenced listening" line. Returns 1 if it exited.
start_server() {
	local logf=$1 i
	"$tmp/presenced" \
		--grpc-addr "127.0.0.1:$grpc_port" --http-addr "127.0.0.1:$http_port" \
		--heartbeat-interval 1s --heartbeat-timeout 4s --reap-interval 1s \
		--shutdown-reconnect-min 200ms --shutdown-reconnect-jitter 300ms \
		--shutdown-timeout 3s >"$logf" 2>&1 &
	srv_pid=$!
	for i in $(seq 100); do
		if grep -q 'presenced listening' "$logf"; then return 0; fi
		if ! kill -0 "$srv_pid" 2>/dev/null; then
			srv_pid=""
			return 1
		fi
		sleep 0.1
	done
	fail "presenced did not report listening within 10 s"
}

# events JS_PREDICATE: prints, one per line, the client's stdout events
# (JSON) for which the predicate over `e` holds.
events() {
	node -e '
		const fs = require("node:fs");
		const pred = new Function("e", "return (" + process.argv[2] + ");");
		for (const line of fs.readFileSync(process.argv[1], "utf8").split("\n")) {
			if (!line) continue;
			let e;
			try { e = JSON.parse(line); } catch { console.error("not JSON: " + line); process.exit(2); }
			if (pred(e)) console.log(line);
		}' "$tmp/client.out" "$1"
}

# wait_line REGEX MIN_COUNT TIMEOUT_S WHAT: waits until at least MIN_COUNT
# lines of the client's stdout match the (extended) REGEX. client.js prints
# keys in a fixed order, so a cheap grep can poll; exact checks use `events`.
wait_line() {
	local re=$1 want=$2 deadline=$((SECONDS + $3)) what=$4 n
	while :; do
		n=$(grep -cE -- "$re" "$tmp/client.out" || true)
		[ "$n" -ge "$want" ] && return 0
		kill -0 "$cli_pid" 2>/dev/null || fail "client exited while waiting for $what"
		[ "$SECONDS" -lt "$deadline" ] || fail "no $what within ${3}s"
		sleep 0.1
	done
}

# post PATH BODY: POSTs JSON to presenced's REST API; prints the response
# body; fails unless the status is 200.
post() {
	local code
	code=$(curl -sS --max-time 5 -o "$tmp/resp.json" -w '%{http_code}' \
		-XPOST "http://127.0.0.1:$http_port$1" -H 'Content-Type: application/json' -d "$2") ||
		fail "curl POST $1 failed"
	[ "$code" = 200 ] || fail "POST $1 answered HTTP $code: $(cat "$tmp/resp.json")"
	cat "$tmp/resp.json"
}

# fields JSON NAME...: prints the named top-level fields of a JSON object on
# one line, separated by spaces ("-" for a missing one).
fields() {
	node -e '
		const o = JSON.parse(process.argv[1]);
		console.log(process.argv.slice(2).map((k) => (o[k] === undefined ? "-" : String(o[k]))).join(" "));' "$@"
}

# assert_push ID SCOPE SEQ DATA_JSON: the client printed exactly one push
# with this id, and its scope, seq and data (deep-equal) match.
assert_push() {
	node -e '
		const assert = require("node:assert");
		const fs = require("node:fs");
		const [file, id, scope, seq, data] = process.argv.slice(1);
		const lines = fs.readFileSync(file, "utf8").split("\n").filter(Boolean);
		const pushes = lines.map((l) => JSON.parse(l)).filter((e) => e.event === "push" && e.id === id);
		try {
			assert.strictEqual(pushes.length, 1, `want exactly one push with id ${id}, got ${pushes.length}`);
			const e = pushes[0];
			assert.strictEqual(e.scope, scope, "scope");
			assert.strictEqual(e.seq, seq, "seq");
			assert.deepStrictEqual(e.data, JSON.parse(data), "data");
		} catch (err) {
			console.error(err.message);
			console.error("pushes with that id: " + JSON.stringify(pushes));
			process.exit(1);
		}' "$tmp/client.out" "$1" "$2" "$3" "$4" || fail "push $1 does not match what was sent"
	log "ok: push $1 ($2 seq $3) arrived with the exact data"
}

# ---- 1. presenced on free loopback ports (another pair if one was taken)
for try in 1 2 3 4 5; do
	read -r grpc_port http_port < <(free_ports)
	if start_server "$tmp/presenced.log"; then break; fi
	log "presenced did not start on $grpc_port/$http_port (try $try): $(tail -n 1 "$tmp/presenced.log")"
	[ "$try" != 5 ] || fail "presenced did not start"
done
log "presenced up: grpc 127.0.0.1:$grpc_port, http 127.0.0.1:$http_port"

# ---- 2. the client
node "$here/client.js" --addr "127.0.0.1:$grpc_port" --uid node-alice --label device=test \
	--backoff-initial-ms 200 --backoff-max-ms 2000 >"$tmp/client.out" 2>"$tmp/client.err" &
cli_pid=$!
wait_line '^\{"event":"identified",.*"uid":"node-alice"' 1 15 "identified event"
events 'e.event === "identified"' | grep -q '"heartbeatIntervalMs":1000,"heartbeatTimeoutMs":4000' ||
	fail "identified does not carry the server's heartbeat settings (1000/4000 ms)"
log "ok: identified as node-alice"

# ---- 3. outlive the 4 s heartbeat timeout: 5 Pongs = 5 s of Pings
wait_line '^\{"event":"pong","seq":"5"' 1 15 "5th pong"
[ -z "$(events 'e.event === "goodbye" || e.event === "ended"')" ] ||
	fail "the session ended although the client pings: $(events 'e.event === "goodbye" || e.event === "ended"')"
log "ok: session alive past the heartbeat timeout (pings answered)"

# ---- 4. a push to the uid and a broadcast
uid_data='{"text":"hi node","n":42,"pi":3.5,"ok":true,"none":null,"list":[1,"two",{"three":3},[]],"nested":{"a":{"b":"c"}},"empty":{}}'
resp=$(post /v1/uids/node-alice/messages "{\"data\":$uid_data}")
read -r delivered uid_id uid_seq < <(fields "$resp" delivered pushId seq)
[ "$delivered" = 1 ] || fail "SendToUid did not report delivered 1: $resp"
log "ok: SendToUid delivered 1 (push $uid_id)"

bc_data='["broadcast",2,{"all":true}]'
resp=$(post /v1/broadcast "{\"data\":$bc_data}")
read -r delivered bc_id bc_seq < <(fields "$resp" delivered pushId seq)
[ "$delivered" = 1 ] || fail "Broadcast did not report delivered 1: $resp"
log "ok: Broadcast delivered 1 (push $bc_id)"

wait_line "^\\{\"event\":\"push\",\"id\":\"($uid_id|$bc_id)\"" 2 10 "uid push and broadcast"
assert_push "$uid_id" PUSH_SCOPE_UID "$uid_seq" "$uid_data"
assert_push "$bc_id" PUSH_SCOPE_BROADCAST "$bc_seq" "$bc_data"

# ---- 5. server restart: Goodbye SHUTDOWN, reconnect after the hint
stop "$srv_pid"
srv_pid=""
wait_line '^\{"event":"goodbye","reason":"GOODBYE_REASON_SHUTDOWN"' 1 10 "goodbye SHUTDOWN"
[ -n "$(events 'e.event === "goodbye" && e.reconnect === true && e.reconnectAfterMs > 0')" ] ||
	fail "goodbye SHUTDOWN without a reconnect hint: $(events 'e.event === "goodbye"')"
start_server "$tmp/presenced2.log" || fail "presenced did not restart on $grpc_port/$http_port: $(tail -n 1 "$tmp/presenced2.log")"
wait_line '^\{"event":"identified",.*"uid":"node-alice"' 2 15 "identified after the restart"
log "ok: reconnected after the server restart"
again='{"text":"after restart"}'
resp=$(post /v1/uids/node-alice/messages "{\"data\":$again}")
read -r delivered again_id again_seq < <(fields "$resp" delivered pushId seq)
[ "$delivered" = 1 ] || fail "SendToUid after the restart did not report delivered 1: $resp"
wait_line "^\\{\"event\":\"push\",\"id\":\"$again_id\"" 1 10 "push after the restart"
assert_push "$again_id" PUSH_SCOPE_UID "$again_seq" "$again"

# ---- 6. SIGTERM: the client says stopped and exits 0
kill -TERM "$cli_pid"
for i in $(seq 50); do
	kill -0 "$cli_pid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$cli_pid" 2>/dev/null && fail "client still running 5 s after SIGTERM"
rc=0
wait "$cli_pid" || rc=$?
cli_pid=""
[ "$rc" = 0 ] || fail "client exited $rc after SIGTERM"
[ -n "$(events 'e.event === "stopped" && e.signal === "SIGTERM"')" ] || fail "client did not print a stopped event"
[ -z "$(events 'e.event === "fatal"')" ] || fail "client printed a fatal event: $(events 'e.event === "fatal"')"
log "ok: client exited 0 on SIGTERM"
passed=1
