#!/usr/bin/env python3
"""Goroutine stack sizes of an idle server, from a GOTRACEBACK=system dump.

Usage: bench/stacks.py DUMP  (the stderr of a server killed with SIGQUIT
while GOTRACEBACK=system; bench/stacks.sh makes one)

For each kind of goroutine an idle session has it prints:
  used   bytes of stack in use while blocked (goexit's fp - the top sp)
  floor  the smallest stack Go's GC can shrink it to once it has grown
         past that: a stack is halved only while used + 800 (stackNosplit)
         < a quarter of it, and never below 2 KiB. A goroutine whose stack
         never grew keeps the one it started with (2 KiB, or the runtime's
         adaptive starting size)
  size   the stack it actually has, inferred from where the stacks start:
         2, 4 and 8 KiB stacks are carved from 32 KiB spans at multiples of
         their size, so a kind whose stacks all start 8 KiB-aligned has
         8 KiB (or larger) stacks, one whose stacks are only half the time
         has 4 KiB ones, and so on (a mix gives fractions in between).
"""
import collections
import re
import sys

KINDS = [
    # The reader first: its traceback also names Serve (the go statement).
    ("reader (server.readLoop, in Recv)", "server.(*session).readLoop"),
    ("reader (server.Serve's, in Recv)", "server.(*Server).Serve.func"),
    ("handler (grpc stream goroutine, server.Serve)", "server.(*Server).Serve"),
    ("lite connection reader", "lite.(*conn)"),
    ("grpc frame reader (HandleStreams)", "HandleStreams"),
    ("grpc loopy writer", "loopyWriter"),
    ("grpc keepalive", "http2Server).keepalive"),
    ("session writer (server.writeLoop)", "writeLoop"),
]

txt = open(sys.argv[1], errors="replace").read()
# argv[2], the sessions open: the sum weighs each kind by its count per
# session (without it, one of each kind per session).
sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 0
blocks = re.split(r"\n\n(?=goroutine \d+)", txt[txt.find("\ngoroutine ") + 1:])
used = collections.defaultdict(list)
hi = collections.defaultdict(list)
for b in blocks:
    fps = [int(x, 16) for x in re.findall(r" fp=(0x[0-9a-f]+)", b)]
    sps = [int(x, 16) for x in re.findall(r" sp=(0x[0-9a-f]+)", b)]
    if not fps:
        continue
    for name, needle in KINDS:
        if needle in b:
            used[name].append(max(fps) - min(sps))
            hi[name].append(max(fps))
            break

# goexit's fp is a fixed distance below the stack's top; find it from the
# alignment every stack top shares (2 KiB at least).
off = collections.Counter(h % 2048 for v in hi.values() for h in v).most_common(1)[0][0]
print(f"{'goroutine':48s} {'n':>6s} {'used':>6s} {'floor':>6s} {'size':>8s}")
total = 0.0
for name, _ in KINDS:
    if name not in used:
        continue
    u = sorted(used[name])[len(used[name]) // 2]
    floor = 2048
    while u + 800 >= floor // 2:  # cannot shrink from 2*floor
        floor *= 2
    tops = [h - off + 2048 for h in hi[name]]
    f4 = sum(t % 4096 == 0 for t in tops) / len(tops)
    f8 = sum(t % 8192 == 0 for t in tops) / len(tops)
    p2 = max(0.0, 2 * (1 - f4))
    p8 = max(0.0, 2 * (f8 - 0.25 * p2) - (1 - p2))
    p4 = max(0.0, 1 - p2 - p8)
    size = 2 * p2 + 4 * p4 + 8 * p8
    total += size * (len(used[name]) / sessions if sessions else 1)
    print(f"{name:48s} {len(used[name]):6d} {u:6d} {floor // 1024:4d} K {size:6.1f} K")
print(f"{'sum per session (KiB)':48s} {'':6s} {'':6s} {'':6s} {total:6.1f} K")
