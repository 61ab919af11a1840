#!/usr/bin/env python3
"""Who held the CPU while a process's threads waited to run.

Reads `perf sched timehist` output (stdin or a file) and, for each
PROCESS:CPU given, takes every wake-up of PROCESS's threads on that CPU
that waited longer than --min-ms to run (perf's "sch delay"), and sums, per
task, how long that task ran on the CPU during those waits.

  perf sched record -C 0,1 -o perf.data -- sleep 8     # during a bench run
  perf sched timehist -i perf.data > th.txt
  bench/schedblame.py th.txt presenced:0 presencebench:1
"""
import argparse
import collections
import re
import sys


def rows(f):
    for line in f:
        p = line.split()
        if len(p) < 6 or not p[0][0].isdigit():
            continue
        try:
            t, cpu = float(p[0]), int(p[1].strip("[]"))
            wait, delay, run = (float(x) / 1e3 for x in p[-3:])  # ms -> s
        except ValueError:
            continue
        yield t, cpu, " ".join(p[2:-3]), wait, delay, run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("timehist", help="perf sched timehist output, - for stdin")
    ap.add_argument("targets", nargs="+", help="PROCESS:CPU, e.g. presenced:0")
    ap.add_argument("--min-ms", type=float, default=1.0, help="wake-ups that waited longer than this")
    a = ap.parse_args()
    f = sys.stdin if a.timehist == "-" else open(a.timehist)
    bycpu = collections.defaultdict(list)
    for r in rows(f):
        bycpu[r[1]].append(r)
    for target in a.targets:
        proc, cpu = target.rsplit(":", 1)
        rs = bycpu[int(cpu)]
        delays = sorted(r[4] for r in rs if r[2].startswith(proc))
        held, count = collections.Counter(), collections.Counter()
        slow, total = 0, 0.0
        for i, (t, _, task, _, delay, run) in enumerate(rs):
            if not task.startswith(proc) or delay * 1e3 <= a.min_ms:
                continue
            slow, total = slow + 1, total + delay
            start = t - run  # a row is written when its task stops running
            ready = start - delay
            for t2, _, task2, _, _, run2 in rs[max(0, i - 500):i]:
                overlap = min(t2, start) - max(t2 - run2, ready)
                if overlap > 0:
                    name = re.sub(r"\[.*", "", task2)
                    held[name] += overlap
                    count[name] += 1
        n = len(delays)
        if n == 0:
            print(f"{proc} on CPU {cpu}: no wake-ups")
            continue
        q = lambda p: delays[min(n - 1, int(n * p))] * 1e3
        print(f"{proc} on CPU {cpu}: {n} wake-ups, wait to run p50 {q(.5):.3f} p99 {q(.99):.3f} "
              f"p999 {q(.999):.3f} max {delays[-1] * 1e3:.3f} ms; {slow} waited > {a.min_ms} ms "
              f"({total * 1e3:.1f} ms in all), while the CPU ran:")
        for name, s in held.most_common(8):
            print(f"  {name:<28} {s * 1e3:7.1f} ms (in {count[name]} of them)")


if __name__ == "__main__":
    main()
