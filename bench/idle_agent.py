#!/usr/bin/python3
"""Idle agent with 10 peers: resident memory and CPU of one vowd in an 11-agent mesh
with nothing to run (BENCHMARKS.md: RSS <= 20 MB, CPU <= 1%).

usage: bench/idle_agent.py BUILD_DIR [--seconds N] [--runs N]
Prints one line per run and the median; the figures go to BENCHMARKS.md.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from mesh import Mesh, cpu_ticks, wait_until  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_run(build, seconds):
    mesh = Mesh(os.path.join(build, "agent", "vow"), os.path.join(build, "agent", "vowd"),
                [os.path.join(HERE, "..", "tests", "integration", "slow.toml")])
    try:
        for i in range(11):
            mesh.add(f"n{i}", [])
        mesh.start()
        target = mesh.agents[0]
        wait_until("11 live agents", lambda: sum(a["alive"] for a in target.status()["agents"])
                   == 11, 60)
        time.sleep(2.0)  # settle: first syncs and holdings exchanges are not idle
        hz = os.sysconf("SC_CLK_TCK")
        pid = target.proc.pid
        t0, c0 = time.monotonic(), cpu_ticks(pid)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), cpu_ticks(pid)
        cpu = 100.0 * (c1 - c0) / hz / (t1 - t0)
        return rss_kib(pid) / 1024.0, cpu
    finally:
        mesh.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rss, cpu = [], []
    for r in range(args.runs):
        m, c = one_run(args.build, args.seconds)
        rss.append(m)
        cpu.append(c)
        print(f"run {r + 1}: RSS {m:.1f} MiB, CPU {c:.2f}%")
    print(f"idle agent, 10 peers: RSS {statistics.median(rss):.1f} MiB "
          f"({min(rss):.1f}..{max(rss):.1f}), CPU {statistics.median(cpu):.2f}% "
          f"({min(cpu):.2f}..{max(cpu):.2f}) over {args.seconds:.0f} s")


if __name__ == "__main__":
    main()
