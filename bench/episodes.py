#!/usr/bin/env python3
"""Which other tasks ran when a run's latency tail happened.

presencebench --series writes one line per push with its scheduled unix
time (sched_unix_s) and its receipts' max latency. An "episode" is a run of
consecutive pushes later than --late-ms; the pushes of one episode are all
released together, so its start is when something stopped the path.

  watch: sample the CPU time (from /proc/PID/task/*/schedstat) of the
         given processes every 2 ms for --for seconds, with wall-clock
         times, while a run goes on:
           bench/episodes.py watch --for 20 --out cpu.log 1 77
  align: for each episode of a series, the watched processes' CPU bursts
         that began within --near-ms of it, and for each burst of more
         than --burst-ms, whether an episode began near it:
           bench/episodes.py align series.csv cpu.log

Reads /proc only; talks to no network.
"""
import argparse
import os
import signal
import sys
import time


def task_cpu_ns(pid):
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def watch(args):
    pids = args.pids
    prev = {p: task_cpu_ns(p) for p in pids}
    end = time.time() + args.seconds
    with open(args.out, "w") as out:
        out.write("# " + " ".join(f"{p}={comm(p)}" for p in pids) + "\n")
        while time.time() < end:
            time.sleep(0.002)
            now = time.time()
            row = [f"{now:.6f}"]
            for p in pids:
                c = task_cpu_ns(p)
                row.append(f"{(c - prev[p]) / 1e6:.3f}" if c is not None and prev[p] is not None else "0")
                prev[p] = c
            out.write(" ".join(row) + "\n")


def read_series(path, late_ms):
    episodes = []  # [start_unix, worst_ms, pushes]
    last = None
    with open(path) as f:
        head = f.readline().strip().split(",")
        if "sched_unix_s" not in head:
            sys.exit(f"{path}: no sched_unix_s column (a presencebench --series from before it had one)")
        i_at, i_max = head.index("sched_unix_s"), head.index("max_ms")
        period = None
        for line in f:
            p = line.strip().split(",")
            if len(p) <= i_at:
                continue
            at, mx = float(p[i_at]), float(p[i_max])
            if last is not None and period is None:
                period = at - last
            if mx > late_ms:
                if episodes and at - episodes[-1][3] <= 2 * (period or 0.01):
                    e = episodes[-1]
                    e[1], e[2], e[3] = max(e[1], mx), e[2] + 1, at
                else:
                    episodes.append([at, mx, 1, at])
            last = at
    return episodes


def read_bursts(path, gap_s=0.02):
    with open(path) as f:
        names = f.readline().lstrip("# ").split()
        bursts = {n: [] for n in names}  # name -> [start, end, ms]
        for line in f:
            p = line.split()
            t = float(p[0])
            for n, v in zip(names, p[1:]):
                ms = float(v)
                if ms <= 0.2:
                    continue
                b = bursts[n]
                if b and t - b[-1][1] < gap_s:
                    b[-1][1], b[-1][2] = t, b[-1][2] + ms
                else:
                    b.append([t - 0.002, t, ms])
    return bursts


def align(args):
    eps = read_series(args.series, args.late_ms)
    bursts = read_bursts(args.cpulog)
    if not eps:
        print(f"no episode (no push later than {args.late_ms} ms)")
    t0 = min([e[0] for e in eps] + [b[0] for v in bursts.values() for b in v] or [0])
    near = args.near_ms / 1e3
    print(f"{len(eps)} episodes (pushes later than {args.late_ms} ms), times from the first event:")
    for start, worst, n, _ in eps:
        hits = [f"{name} {ms:.1f} ms at {1e3 * (b0 - start):+.0f} ms"
                for name, v in bursts.items() for b0, _, ms in v
                if abs(b0 - start) <= near and ms >= 1]
        print(f"  +{start - t0:7.3f} s  {n:3d} pushes, worst {worst:5.1f} ms  | {'; '.join(hits) or '-'}")
    for name, v in bursts.items():
        big = [b for b in v if b[2] >= args.burst_ms]
        matched = sum(1 for b in big if any(abs(b[0] - e[0]) <= near for e in eps))
        print(f"{name}: {len(big)} bursts of >= {args.burst_ms} ms CPU, {matched} with an episode within {args.near_ms} ms;"
              f" {sum(b[2] for b in v):.0f} ms CPU in all")
        for b in big:
            print(f"  +{b[0] - t0:7.3f} s  {b[2]:5.1f} ms over {1e3 * (b[1] - b[0]):.0f} ms")


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under | head
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch")
    w.add_argument("--for", dest="seconds", type=float, default=20)
    w.add_argument("--out", required=True)
    w.add_argument("pids", nargs="+")
    a = sub.add_parser("align")
    a.add_argument("series")
    a.add_argument("cpulog")
    a.add_argument("--late-ms", type=float, default=8)
    a.add_argument("--near-ms", type=float, default=30)
    a.add_argument("--burst-ms", type=float, default=5)
    args = ap.parse_args()
    {"watch": watch, "align": align}[args.cmd](args)


if __name__ == "__main__":
    main()
