# Shared by the scripts in bench/ (sourced, not run): the servers' lifecycle and the wait for a quiet machine. Needs
# BIN, GRPC, HTTP, SERVER_CPU and QUIET_WAIT set; sets SRV (the latest
# server started) and SRVS (every process started and not yet stopped,
# all stopped at exit).
#
# CPU_GUARANTEE=1 (optional, root only) also runs the server and the tool
# each in a cpu cgroup of its own with the largest weight the kernel
# allows (cgroup v1 cpu.shares 262144, v2 cpu.weight 10000), so that on
# their cores they win against the machine's other tasks, whatever those
# tasks' nice: on the machine BENCHMARKS.md was measured on, the sandbox's
# init runs at nice -10 (CFS weight 9,548 against a plain process's 1,024)
# and took ≈25 ms of the server's core every ≈3 s. The groups are
# presence-bench-server and presence-bench-tool, removed at exit.

SRV=""
SRVS=()
CGROUPS=()
cleanup() {
	local p
	for p in "${SRVS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${SRVS[@]}"; do wait "$p" 2>/dev/null || true; done
	for p in "${CGROUPS[@]}"; do rmdir "$p" 2>/dev/null || true; done
	rm -rf "$BIN"
}
trap cleanup EXIT

# With CPU_GUARANTEE=1, CG is where the two cpu cgroups are made (now,
# once, so that cleanup knows them).
CG=""
if [[ "${CPU_GUARANTEE:-}" == 1 ]]; then
	if [[ -f /sys/fs/cgroup/cpu/cpu.shares ]]; then # v1
		CG=/sys/fs/cgroup/cpu
		CG_KNOB=cpu.shares CG_WEIGHT=262144
	elif grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then # v2
		CG=/sys/fs/cgroup
		CG_KNOB=cpu.weight CG_WEIGHT=10000
	else
		echo "CPU_GUARANTEE=1: no cpu cgroup controller under /sys/fs/cgroup" >&2
		exit 1
	fi
	for g in presence-bench-server presence-bench-tool; do
		[[ -d "$CG/$g" ]] || mkdir "$CG/$g"
		CGROUPS+=("$CG/$g")
		echo "$CG_WEIGHT" >"$CG/$g/$CG_KNOB"
	done
fi

# pin GROUP CPU sets PIN to the command prefix that runs a command on CPU
# (taskset), and in cpu cgroup GROUP when CPU_GUARANTEE=1. Every step
# execs, so $! of a backgrounded "${PIN[@]}" CMD is CMD's pid.
pin() {
	if [[ -n "$CG" ]]; then
		PIN=(sh -c 'echo $$ >"$0" && exec "$@"' "$CG/$1/cgroup.procs" taskset -c "$2")
	else
		PIN=(taskset -c "$2")
	fi
}

# cpu_note prints, for machine.txt, whether CPU_GUARANTEE was on.
cpu_note() {
	if [[ -n "$CG" ]]; then
		echo "cpu guarantee: server and tool each in a cpu cgroup ($CG/presence-bench-{server,tool}) at $CG_KNOB $CG_WEIGHT (CPU_GUARANTEE=1)"
	else
		echo "cpu guarantee: none (plain taskset)"
	fi
}

# build_at REV CMD OUT builds ./cmd/CMD as it was at git revision REV
# (from a git archive under $BIN) into OUT.
build_at() {
	local rev=$1 cmd=$2 out=$3 dir="$BIN/src-$1"
	if [[ ! -d "$dir" ]]; then
		mkdir -p "$dir"
		git archive "$rev" | tar -x -C "$dir"
	fi
	(cd "$dir" && go build -o "$out" "./cmd/$cmd")
}

# machine_info prints the date, the machine and the toolchain, for
# $OUT/machine.txt.
machine_info() {
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "nproc: $(nproc)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
	echo "go: $(go version)"
	echo "kernel: $(uname -r)"
}

# require_free_port fails when something already serves $HTTP.
require_free_port() {
	if curl -fsS -m 1 "http://$HTTP/healthz" >/dev/null 2>&1; then
		echo "something already serves $HTTP; stop it first" >&2
		exit 1
	fi
}

# require_free_ports PORT... fails when anything listens on 127.0.0.1:PORT.
require_free_ports() {
	local port
	for port in "$@"; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "127.0.0.1:$port is taken; stop what listens there first" >&2
			exit 1
		fi
	done
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

# start_server BIN [FLAGS...] starts a fresh presenced on $GRPC/$HTTP
# pinned to SERVER_CPU, logging to $BIN/${SRV_LOG:-presenced}.log, and
# waits until it is healthy.
start_server() {
	local bin=$1 log="$BIN/${SRV_LOG:-presenced}.log"
	shift
	# SERVER_ENV: environment for this server only (e.g. GOGC=off for a diagnostic run).
	pin presence-bench-server "$SERVER_CPU"
	"${PIN[@]}" env ${SERVER_ENV:-} "$bin" --grpc-addr "$GRPC" --http-addr "$HTTP" "$@" >"$log" 2>&1 &
	SRV=$!
	SRVS+=("$SRV")
	local i
	for ((i = 0; i < 100; i++)); do
		curl -fsS -m 1 "http://$HTTP/healthz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "presenced did not come up:" >&2
	tail -20 "$log" >&2
	exit 1
}

# wait_for FILE PATTERN waits (at most 180 s) until FILE (a bench's
# stderr) says PATTERN.
wait_for() {
	local i
	for ((i = 0; i < 1800; i++)); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "timed out waiting for '$2'" >&2
	return 1
}

# stop_pids PID... stops processes started here with SIGTERM (SIGKILL
# after 20 s), all at once, and forgets them.
stop_pids() {
	local p i alive
	for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
	for ((i = 0; i < 200; i++)); do
		alive=false
		for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=true; done
		$alive || break
		sleep 0.1
	done
	for p in "$@"; do
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	local rest=() q
	for q in "${SRVS[@]}"; do [[ " $* " == *" $q "* ]] || rest+=("$q"); done
	SRVS=("${rest[@]}")
}

# stop_server stops the latest server started.
stop_server() {
	stop_pids "$SRV"
	SRV=""
}

# run_one NAME LABEL SERVER_BIN [SERVER_FLAGS...] -- BENCH_FLAGS... waits
# for a quiet machine, starts a fresh server, runs presencebench against it
# (pinned to TOOL_CPU) into $OUT/NAME.json and .txt, stops the server and
# prints the run's checks.
run_one() {
	local name=$1 label=$2 bin=$3
	shift 3
	local srvflags=()
	while [[ $# -gt 0 && "$1" != "--" ]]; do
		srvflags+=("$1")
		shift
	done
	shift
	wait_quiet
	echo "== $name: presenced ${srvflags[*]:-} / presencebench $*"
	start_server "$bin" "${srvflags[@]}"
	local rc=0
	pin presence-bench-tool "$TOOL_CPU"
	"${PIN[@]}" "$BIN/presencebench" --grpc-addr "$GRPC" --http-addr "$HTTP" --server-pid "$SRV" \
		--label "$label" --out "$OUT/$name.json" "$@" >"$OUT/$name.txt" || rc=$?
	stop_server
	grep -E '^(CHECK|[a-z].*(pass|FAIL)$)' "$OUT/$name.txt" || true
	if ((rc != 0)); then
		echo "   presencebench exited $rc (see $OUT/$name.txt)"
	fi
}
