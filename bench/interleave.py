#!/usr/bin/env python3
"""Runs commands in interleaved rounds (a fresh random order each round) and
compares each to the first, round by round: on a VM whose speed drifts
within minutes, a ratio taken inside one round is steadier than one between
two medians taken minutes apart.

    interleave.py ROUNDS DIR NAME=COMMAND... > table.md

COMMAND is split on spaces and run in DIR, its output discarded; a failure
stops the benchmark. Wall time and CPU time (user + system of the command
and every process it started, with perf stat when perf is installed) are
measured per run. Prints a
markdown table: medians, and the median and quartiles of the per-round
ratios against the first command.
"""
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


PERF = shutil.which("perf")


def run(argv, cwd):
    with tempfile.NamedTemporaryFile() as stat, tempfile.TemporaryFile() as err:
        # perf counts the CPU time of every process the command starts,
        # reaped by it or not (cordon's init outlives cordon).
        wrap = [PERF, "stat", "-x,", "-e", "task-clock", "-o", stat.name, "--"] if PERF else []
        start = time.perf_counter()
        code = subprocess.run(wrap + argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err).returncode
        wall = time.perf_counter() - start
        if code != 0:
            err.seek(0)
            why = err.read().decode(errors="replace").strip()
            sys.exit(f"interleave: {' '.join(argv)} exited {code}: {why}")
        cpu = None
        for line in open(stat.name):
            f = line.split(",")
            if len(f) > 2 and f[2] == "task-clock":
                cpu = float(f[0]) / 1e3
    return wall, cpu


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    rounds, cwd = int(sys.argv[1]), sys.argv[2]
    cmds = []
    for arg in sys.argv[3:]:
        name, _, cmd = arg.partition("=")
        if not cmd:
            sys.exit(f"interleave: expected NAME=COMMAND, got {arg!r}")
        cmds.append((name, cmd.split()))
    # One untimed run each: caches warm, binaries paged in.
    for _, argv in cmds:
        run(argv, cwd)
    wall = {n: [] for n, _ in cmds}
    cpu = {n: [] for n, _ in cmds}
    for _ in range(rounds):
        order = cmds[:]
        random.shuffle(order)
        for name, argv in order:
            w, c = run(argv, cwd)
            wall[name].append(w)
            cpu[name].append(c)
    base = cmds[0][0]

    def ratios(series, name):
        r = sorted(a / b for a, b in zip(series[name], series[base]))
        q = len(r) // 4
        return [100 * (x - 1) for x in (statistics.median(r), r[q], r[-q - 1])]

    print(f"| command ({rounds} rounds) | wall (median) | CPU (median) | wall vs {base}, per round: median [quartiles] | CPU vs {base} |")
    print("|---|---:|---:|---:|---:|")
    for name, _ in cmds:
        w = statistics.median(wall[name]) * 1e3
        c = f"{statistics.median(cpu[name]) * 1e3:.0f} ms" if PERF else "(no perf)"
        if name == base:
            print(f"| {name} | {w:.0f} ms | {c} | | |")
        else:
            m, lo, hi = ratios(wall, name)
            rc = f"{ratios(cpu, name)[0]:+.1f} %" if PERF else ""
            print(f"| {name} | {w:.0f} ms | {c} | {m:+.1f} % [{lo:+.1f} … {hi:+.1f}] | {rc} |")


main()
