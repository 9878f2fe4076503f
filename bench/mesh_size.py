#!/usr/bin/python3
"""Real meshes of N agents on loopback (BENCHMARKS.md, "A real mesh of 40 agents"):

- all alive: from the last agent's start until every agent has logged every other one
  alive (the last "peer X is alive" line of each pair, from the agents' own log stamps);
- idle CPU per agent over --seconds once all are alive (and --settle seconds after);
- starved: --starve seconds with a busy loop per core at the agents' own priority;
  counts the "is suspect" and "is dead" lines the agents log meanwhile about peers that
  were up the whole time (every one of them is).

usage: bench/mesh_size.py BUILD_DIR [--agents 10,40] [--seconds 10] [--starve 60]
                          [--hogs H] [--seeds K] [--profile lan]
--seeds K gives each agent K seed peers (the next K in a ring) instead of all of them,
so the rest must be learned through the membership. Prints one line per mesh size.
"""
import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from mesh import Mesh, cpu_ticks, wait_until  # noqa: E402

LINE = re.compile(r"^(\S+) \S+ .*\] peer-state: peer \S+ is (alive|suspect|dead)(?: \(first message\))? \[peer (\S+)\]$")


def stamp(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def peer_events(agent):
    """(time, peer name, state) for each liveness line in an agent's log."""
    out = []
    with open(agent.log_path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.rstrip("\n"))
            if m:
                out.append((stamp(m.group(1)), m.group(3), m.group(2)))
    return out


def start_mesh(build, n, seeds, profile):
    mesh = Mesh(os.path.join(build, "agent", "vow"), os.path.join(build, "agent", "vowd"),
                [os.path.join(HERE, "..", "tests", "integration", "slow.toml")],
                prefix="vow-size-")
    timing = {"membership": profile} if profile else None
    for i in range(n):
        mesh.add(f"n{i:03d}", [], timing=timing)
    agents = mesh.agents
    for i, a in enumerate(agents):
        others = [b for b in agents if b is not a]
        if seeds:
            others = [agents[(i + k) % n] for k in range(1, seeds + 1)]
        a.write_config([f"{b.id}@{b.endpoint}" for b in others])
    for a in agents:
        a.start()
    return mesh, time.time()


def all_alive_at(mesh):
    """When the last agent logged the last of its peers alive (None if one has not)."""
    names = {a.id[:12] for a in mesh.agents}
    last = 0.0
    for a in mesh.agents:
        state = {}
        when = {}
        for t, peer, s in peer_events(a):
            state[peer] = s
            if s == "alive":
                when[peer] = t
        for p in names - {a.id[:12]}:
            if state.get(p) != "alive":
                return None
            last = max(last, when[p])
    return last


def one_size(build, n, args):
    mesh, started = start_mesh(build, n, args.seeds, args.profile)
    try:
        done = wait_until(f"{n} agents each logging the others alive",
                          lambda: all_alive_at(mesh), 120, interval=0.5)
        alive_s = done - started
        time.sleep(args.settle)
        hz = os.sysconf("SC_CLK_TCK")
        pids = [a.proc.pid for a in mesh.agents]
        t0, c0 = time.monotonic(), [cpu_ticks(p) for p in pids]
        time.sleep(args.seconds)
        t1, c1 = time.monotonic(), [cpu_ticks(p) for p in pids]
        cpus = [100.0 * (b - a) / hz / (t1 - t0) for a, b in zip(c0, c1)]
        starved = None
        if args.starve > 0:
            since = time.time()
            loops = [subprocess.Popen(["sh", "-c", "while :; do :; done"])
                     for _ in range(args.hogs or os.cpu_count() or 1)]
            try:
                time.sleep(args.starve)
            finally:
                for p in loops:
                    p.kill()
                    p.wait()
            suspect = dead = 0
            for a in mesh.agents:
                for t, _, s in peer_events(a):
                    if t >= since:
                        suspect += s == "suspect"
                        dead += s == "dead"
            gone = [a.name for a in mesh.agents if not a.alive()]
            starved = (suspect, dead, gone)
        line = (f"{n} agents (seeds {args.seeds or n - 1}, {args.profile or 'lan'}): "
                f"all alive {alive_s:.2f} s after the last start; idle CPU per agent "
                f"median {statistics.median(cpus):.2f}% (min {min(cpus):.2f}, "
                f"max {max(cpus):.2f}) over {args.seconds:.0f} s")
        if starved:
            line += (f"; starved {args.starve:.0f} s ({args.hogs or os.cpu_count()} busy loops): "
                     f"{starved[0]} suspicions, {starved[1]} deaths logged"
                     + (f", exited: {starved[2]}" if starved[2] else ""))
        print(line, flush=True)
        return alive_s, cpus, starved
    finally:
        mesh.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--agents", default="10,40")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--starve", type=float, default=60.0)
    ap.add_argument("--seeds", type=int, default=0)
    ap.add_argument("--hogs", type=int, default=0, help="busy loops (default: one per core)")
    ap.add_argument("--profile", default="")
    args = ap.parse_args()
    for n in [int(x) for x in args.agents.split(",")]:
        one_size(args.build, n, args)


if __name__ == "__main__":
    main()
