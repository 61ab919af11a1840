#!/usr/bin/env bash
# Runs a presence cluster on this machine: one nats-server and three
# presenced nodes (a, b, c) on loopback, for a user to try (docs/cluster.md).
#
#   scripts/cluster.sh          start them, print what to try, stop on Ctrl-C
#   scripts/cluster.sh -check   start them, prove a push crosses nodes, a
#                               push stored through one node reaches the uid
#                               on another, and a killed node's uid goes
#                               offline, then stop
#
# Ports: NATS 127.0.0.1:4222; node a gRPC :9091 HTTP :8081, b :9092/:8082,
# c :9093/:8083. Logs go to a temporary directory, printed at start.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
check=false
[ "${1:-}" = "-check" ] && check=true

dir=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if $check; then rm -rf "$dir"; fi
}
trap cleanup EXIT

go build -o "$dir/presenced" ./cmd/presenced
go build -o "$dir/presencectl" ./cmd/presencectl
# nats-server is a module this repository already requires (for tests).
go build -o "$dir/nats-server" github.com/nats-io/nats-server/v2
ctl() { "$dir/presencectl" "$@"; }
# online NODE_PORT: whether node NODE_PORT sees alice online (a batch query:
# answered from the node's directory, no other node asked).
online() { ctl --addr "127.0.0.1:$1" presence --uid alice --uid nobody | grep -q '"uid":"alice", *"online":true'; }
# expect_log FILE TEXT WHY: wait up to 5 s for TEXT in FILE, else fail with WHY.
expect_log() {
	for _ in $(seq 100); do
		if grep -q "$2" "$1"; then return 0; fi
		sleep 0.05
	done
	echo "cluster.sh: $3" >&2
	cat "$1" >&2
	exit 1
}

for port in 4222 9091 9092 9093 8081 8082 8083; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "cluster.sh: 127.0.0.1:$port is taken; stop what listens there first" >&2
		exit 1
	fi
done

"$dir/nats-server" -a 127.0.0.1 -p 4222 -js -sd "$dir/jetstream" >"$dir/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
	if (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then break; fi
	sleep 0.1
done
declare -A node_pid
i=1
for name in a b c; do
	"$dir/presenced" --nats-url nats://127.0.0.1:4222 --nats-name "$name" \
		--grpc-addr "127.0.0.1:909$i" --http-addr "127.0.0.1:808$i" \
		--presence-grace 1s >"$dir/$name.log" 2>&1 &
	pids+=($!)
	node_pid[$name]=$!
	i=$((i + 1))
done
for i in 1 2 3; do
	for _ in $(seq 50); do
		if curl -sf "127.0.0.1:808$i/healthz" >/dev/null 2>&1; then break; fi
		sleep 0.1
	done
	if ! curl -sf "127.0.0.1:808$i/healthz" >/dev/null; then
		echo "cluster.sh: node on :808$i did not start; logs in $dir" >&2
		cat "$dir"/*.log >&2
		exit 1
	fi
done
echo "cluster.sh: nats-server on 127.0.0.1:4222, nodes a b c on gRPC :9091 :9092 :9093 (HTTP :8081 :8082 :8083); logs in $dir"

if ! $check; then
	cat <<EOF

Try, in other terminals (presencectl: go run ./cmd/presencectl):
  presencectl --addr 127.0.0.1:9091 watch --uid alice            # a client on node a
  presencectl --addr 127.0.0.1:9093 send --uid alice --text hi   # pushed through node c
  curl -s 127.0.0.1:8082/v1/uids/alice/presence                  # presence seen from node b
  kill -9 ${node_pid[a]}                                            # node a dies; b reports alice offline within 6 s
Ctrl-C stops everything.
EOF
	wait
	exit 0
fi

# -check: a client on a, a push through c, presence through b.
"$dir/presencectl" --addr 127.0.0.1:9091 watch --uid alice >"$dir/watch.log" 2>&1 &
watch=$!
pids+=($watch)
for _ in $(seq 100); do
	if online 9092; then break; fi
	sleep 0.05
done
out=$(ctl --addr 127.0.0.1:9093 send --uid alice --text "hello from c")
echo "send through c: $out"
echo "$out" | grep -q '"delivered": *1' || { echo "cluster.sh: want delivered 1" >&2; exit 1; }
expect_log "$dir/watch.log" "hello from c" "the push did not reach the client on a"
echo "the client on a got it"

# A push stored through b for a uid offline everywhere (kept in JetStream)
# reaches the uid when it connects to c.
out=$(ctl --addr 127.0.0.1:9092 send --uid zoe --text "stored via b" --store-for 1m)
echo "$out" | grep -q '"stored": *true' || { echo "cluster.sh: want stored: $out" >&2; exit 1; }
"$dir/presencectl" --addr 127.0.0.1:9093 watch --uid zoe >"$dir/zoe.log" 2>&1 &
pids+=($!)
expect_log "$dir/zoe.log" "stored via b" "the push stored through b did not reach zoe on c"
echo "a push stored through b reached zoe when it connected to c"

kill -9 "${node_pid[a]}"
wait "${node_pid[a]}" 2>/dev/null || true
start=$(date +%s%N)
for _ in $(seq 200); do
	if online 9092; then sleep 0.05; else break; fi
done
took=$(( ($(date +%s%N) - start) / 1000000 ))
if online 9092; then
	echo "cluster.sh: alice still online on b 10 s after node a was killed" >&2
	exit 1
fi
echo "node a killed (SIGKILL): b reports alice offline after ${took} ms (bound: node timeout 5 s + heartbeat 1 s)"
echo "cluster.sh: ok"
