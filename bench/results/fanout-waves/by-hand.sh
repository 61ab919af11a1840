#!/usr/bin/env bash
# one.sh MODE R SCEN : MODE plain|rfs
set -euo pipefail
mode=$1 r=$2 scen=$3 out=/tmp/waves
ulimit -n 20000
CG=/sys/fs/cgroup/cpu
for g in presence-srv presence-tool; do mkdir -p $CG/$g; echo 262144 > $CG/$g/cpu.shares; done
if [[ $mode == rfs ]]; then
  echo 32768 > /proc/sys/net/core/rps_sock_flow_entries; echo 32768 > /sys/class/net/lo/queues/rx-0/rps_flow_cnt; echo 3 > /sys/class/net/lo/queues/rx-0/rps_cpus
else
  echo 0 > /sys/class/net/lo/queues/rx-0/rps_cpus; echo 0 > /sys/class/net/lo/queues/rx-0/rps_flow_cnt; echo 0 > /proc/sys/net/core/rps_sock_flow_entries
fi
sh -c "echo \$\$ > $CG/presence-srv/cgroup.procs; exec taskset -c 0 /tmp/bins/presenced --grpc-addr 127.0.0.1:19090 --http-addr 127.0.0.1:19080" >$out/srv-$mode-$r.log 2>&1 &
srv=$!
for i in $(seq 100); do curl -fsS -m1 http://127.0.0.1:19080/healthz >/dev/null 2>&1 && break; sleep 0.1; done
case $scen in
fanout) args="--scenario fanout --sessions 10000 --rate 2 --duration 15s --count 300 --window 16 --client raw";;
sat) args="--scenario fanout --sessions 10000 --duration 15s --count 300 --window 16 --client raw";;
unicast) args="--scenario unicast --sessions 10000 --rate 500 --duration 20s --client raw";;
esac
sh -c "echo \$\$ > $CG/presence-tool/cgroup.procs; exec taskset -c 1 /tmp/bins/presencebench --grpc-addr 127.0.0.1:19090 --http-addr 127.0.0.1:19080 --server-pid $srv $args --series $out/series-$mode-$r.csv --out $out/$scen-$mode-$r.json" > $out/$scen-$mode-$r.txt 2>$out/$scen-$mode-$r.err || true
kill -TERM $srv; wait $srv || true
echo 0 > /sys/class/net/lo/queues/rx-0/rps_cpus; echo 0 > /sys/class/net/lo/queues/rx-0/rps_flow_cnt; echo 0 > /proc/sys/net/core/rps_sock_flow_entries
grep -E 'p50|p99|deliveries|cpu' $out/$scen-$mode-$r.txt | head -12
