#!/usr/bin/env bash
# by-hand.sh MODE ROUND: one fan-out run (10,000 sessions, one connection
# each, raw client, 2 broadcasts/s for 15 s, then 300 back to back) with
# presenced on CPU 0 and presencebench on CPU 1, each in a cpu cgroup at
# cpu.shares 262144 (as CPU_GUARANTEE=1). Root only; binaries from
# /tmp/bins; writes $OUT (default /tmp/waves).
#   MODE plain: the machine's defaults.
#   MODE rfs:   receive flow steering on lo (bench/results/loopback-rfs/),
#               reset to 0 after the run.
#   MODE gc:    GODEBUG=gctrace=1 on the server, and its start time in
#               t0-gc-ROUND, to line the GCs up with the series.
# Used by fanout-waves/ and loopback-rfs/ (whose runs predate --series for
# fanout; the series is written after the measurement).
set -euo pipefail
mode=$1 r=$2 out=${OUT:-/tmp/waves}
mkdir -p "$out"
ulimit -n 20000
CG=/sys/fs/cgroup/cpu
for g in presence-srv presence-tool; do mkdir -p $CG/$g; echo 262144 >$CG/$g/cpu.shares; done
rfs() { # rfs ENTRIES CPUMASK
	echo "$1" >/proc/sys/net/core/rps_sock_flow_entries
	echo "$1" >/sys/class/net/lo/queues/rx-0/rps_flow_cnt
	echo "$2" >/sys/class/net/lo/queues/rx-0/rps_cpus
}
if [[ $mode == rfs ]]; then rfs 32768 3; else rfs 0 0; fi
env=()
[[ $mode == gc ]] && env=(GODEBUG=gctrace=1)
date +%s.%N >"$out/t0-$mode-$r"
sh -c "echo \$\$ > $CG/presence-srv/cgroup.procs; exec env ${env[*]:-} taskset -c 0 /tmp/bins/presenced --grpc-addr 127.0.0.1:19090 --http-addr 127.0.0.1:19080" >"$out/srv-$mode-$r.log" 2>&1 &
srv=$!
for i in $(seq 100); do curl -fsS -m1 http://127.0.0.1:19080/healthz >/dev/null 2>&1 && break; sleep 0.1; done
sh -c "echo \$\$ > $CG/presence-tool/cgroup.procs; exec taskset -c 1 /tmp/bins/presencebench --grpc-addr 127.0.0.1:19090 --http-addr 127.0.0.1:19080 --server-pid $srv \
	--scenario fanout --sessions 10000 --rate 2 --duration 15s --count 300 --window 16 --client raw \
	--series $out/series-$mode-$r.csv --out $out/fanout-$mode-$r.json" >"$out/fanout-$mode-$r.txt" 2>"$out/fanout-$mode-$r.err" || true
kill -TERM $srv
wait $srv || true
rfs 0 0
grep -E 'p50|p99|deliveries|cpu' "$out/fanout-$mode-$r.txt" | head -12
