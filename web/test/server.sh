#!/usr/bin/env bash
# server.sh start|stop|restart|kill-restart: runs the server for the browser
# test. The command is $SERVER_CMD (one string; word-split), its pid lives
# in $STATE_DIR/server.pid and its output in $STATE_DIR/server.log; start
# waits until $BASE_URL/healthz answers. stop sends SIGTERM (a graceful
# drain: Goodbye SHUTDOWN) and waits; kill-restart sends SIGKILL instead
# (the connection just drops); freeze and thaw send SIGSTOP and SIGCONT (a
# server that goes silent without closing anything).
set -euo pipefail
: "${STATE_DIR:?}" "${BASE_URL:?}"
pidfile="$STATE_DIR/server.pid"
logfile="$STATE_DIR/server.log"

# alive: the process exists and is not a zombie (an exited server waits
# for its reaper, which may be slow, as its parent is gone).
alive() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ $st != Z* ]]
}
running() { [ -s "$pidfile" ] && alive "$(cat "$pidfile")"; }

start() {
	: "${SERVER_CMD:?}"
	if running; then echo "server.sh: already running (pid $(cat "$pidfile"))" >&2; return 1; fi
	echo "--- start $(date +%T.%N)" >>"$logfile"
	# shellcheck disable=SC2086 # SERVER_CMD is a command line
	$SERVER_CMD </dev/null >>"$logfile" 2>&1 &
	echo $! >"$pidfile"
	for _ in $(seq 1 150); do
		if curl -fsS -o /dev/null --max-time 1 "$BASE_URL/healthz" 2>/dev/null; then return 0; fi
		if ! running; then echo "server.sh: the server exited; its log:" >&2; tail -20 "$logfile" >&2; return 1; fi
		sleep 0.1
	done
	echo "server.sh: $BASE_URL/healthz did not answer within 15s" >&2
	return 1
}

stop() {
	local sig=${1:-TERM} pid
	running || { rm -f "$pidfile"; return 0; }
	pid=$(cat "$pidfile")
	kill -CONT "$pid" 2>/dev/null || true # a frozen server cannot drain
	kill -"$sig" "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do
		alive "$pid" || { rm -f "$pidfile"; return 0; }
		sleep 0.1
	done
	echo "server.sh: pid $pid still running 10s after SIG$sig; killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$pidfile"
}

case "${1:-}" in
start) start ;;
stop) stop TERM ;;
restart) stop TERM && start ;;
kill-restart) stop KILL && start ;;
freeze) running && kill -STOP "$(cat "$pidfile")" ;;
thaw) running && kill -CONT "$(cat "$pidfile")" ;;
*) echo "usage: server.sh start|stop|restart|kill-restart|freeze|thaw" >&2; exit 2 ;;
esac
