# Shared by bench/run.sh and bench/compare.sh (sourced, not run): the
# server's lifecycle and the wait for a quiet machine. Needs BIN, GRPC,
# HTTP, SERVER_CPU and QUIET_WAIT set; sets SRV.

SRV=""
cleanup() {
	if [[ -n "$SRV" ]] && kill -0 "$SRV" 2>/dev/null; then
		kill -TERM "$SRV" 2>/dev/null || true
		wait "$SRV" 2>/dev/null || true
	fi
	rm -rf "$BIN"
}
trap cleanup EXIT

# require_free_port fails when something already serves $HTTP.
require_free_port() {
	if curl -fsS -m 1 "http://$HTTP/healthz" >/dev/null 2>&1; then
		echo "something already serves $HTTP; stop it first" >&2
		exit 1
	fi
}

# busy_cores prints how many cores all processes used over the last second
# (in jiffies per second: 100 is one core).
busy_cores() {
	local a b
	a=($(head -1 /proc/stat))
	sleep 1
	b=($(head -1 /proc/stat))
	echo $(((b[1] + b[2] + b[3] + b[6] + b[7] + b[8]) - (a[1] + a[2] + a[3] + a[6] + a[7] + a[8])))
}

# wait_quiet waits (at most QUIET_WAIT s) until the machine is nearly idle.
wait_quiet() {
	local i
	for ((i = 0; i < QUIET_WAIT; i++)); do
		(($(busy_cores) <= 25)) && return 0 # <= 0.25 cores
	done
	echo "   (machine still busy; running anyway: the report records it)"
}

# start_server BIN [FLAGS...] starts a fresh presenced pinned to SERVER_CPU
# and waits until it is healthy.
start_server() {
	local bin=$1
	shift
	taskset -c "$SERVER_CPU" "$bin" --grpc-addr "$GRPC" --http-addr "$HTTP" "$@" >"$BIN/presenced.log" 2>&1 &
	SRV=$!
	local i
	for ((i = 0; i < 100; i++)); do
		curl -fsS -m 1 "http://$HTTP/healthz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "presenced did not come up:" >&2
	tail -20 "$BIN/presenced.log" >&2
	exit 1
}

# stop_server stops it with SIGTERM (SIGKILL after 20 s).
stop_server() {
	kill -TERM "$SRV"
	local i
	for ((i = 0; i < 200; i++)); do
		kill -0 "$SRV" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$SRV" 2>/dev/null || true
	wait "$SRV" 2>/dev/null || true
	SRV=""
}
