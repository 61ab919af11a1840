#!/usr/bin/env bash
# run.sh MODE R : MODE plain|cg ; one unicast 10k run
set -euo pipefail
mode=$1 r=$2 out=/tmp/cg
ulimit -n 20000
CG=/sys/fs/cgroup/cpu
if [[ $mode == cg ]]; then
  for g in presence-srv presence-tool; do mkdir -p $CG/$g; echo 262144 > $CG/$g/cpu.shares; done
fi
taskset -c 0 /tmp/bins/presenced --grpc-addr 127.0.0.1:19090 --http-addr 127.0.0.1:19080 >$out/srv-$mode-$r.log 2>&1 &
srv=$!
[[ $mode == cg ]] && echo $srv > $CG/presence-srv/cgroup.procs
for i in $(seq 100); do curl -fsS -m1 http://127.0.0.1:19080/healthz >/dev/null 2>&1 && break; sleep 0.1; done
if [[ $mode == cg ]]; then
  sh -c "echo \$\$ > $CG/presence-tool/cgroup.procs; exec taskset -c 1 /tmp/bins/presencebench --grpc-addr 127.0.0.1:19090 --http-addr 127.0.0.1:19080 --server-pid $srv --scenario unicast --sessions 10000 --rate 500 --duration 20s --client raw --series $out/s-$mode-$r.csv --out $out/$mode-$r.json" > $out/$mode-$r.txt
else
  taskset -c 1 /tmp/bins/presencebench --grpc-addr 127.0.0.1:19090 --http-addr 127.0.0.1:19080 --server-pid $srv --scenario unicast --sessions 10000 --rate 500 --duration 20s --client raw --series $out/s-$mode-$r.csv --out $out/$mode-$r.json > $out/$mode-$r.txt
fi
kill -TERM $srv; wait $srv || true
grep -E 'p99|p50' $out/$mode-$r.txt | head -5
