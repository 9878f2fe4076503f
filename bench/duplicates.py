#!/usr/bin/python3
"""Duplicate executions under load: three real agents (capacity 2 each, state on disk)
run a `foreach` stage of N jobs that each sleep 50 ms, with no fault injected; every
agent is busy for the whole run. Counted from the agents' logs: every process started
("started job J epoch E"), against the N jobs. The baseline is one agent alone (it
cannot run a job twice).

  executions   processes started for the N jobs, all agents together
  duplicates   executions - N, in % of N
  wall_s       from the source version to every job done
  claims       claim statements per job (a race is a claim that loses)

usage: bench/duplicates.py [--build DIR] [--jobs 500] [--agents 3] [--json FILE]
Prints one JSON line per mesh size (1 and --agents); BENCHMARKS.md is written by hand.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mesh import Mesh, wait_until  # noqa: E402

PIPELINE = """
[pipeline]
name = "dup"

[[source]]
name = "items"

[[stage]]
name = "sleep"
inputs = ["items"]
foreach = "items"
outputs = []
run = ["/bin/sleep", "0.05"]
"""

STARTED = re.compile(r"started job ([0-9a-f]+) epoch (\d+)")
CLAIMED = re.compile(r"claimed job ([0-9a-f]+) ")


def done_count(agent):
    st = json.loads(agent.vow("status", "--json").stdout)
    for p in st["pipelines"]:
        if p["name"] == "dup":
            for s in p["stages"]:
                if s["name"] == "sleep":
                    return s["jobs"].get("done", 0)
    return 0


def one_mesh(build, n, agents):
    vow = os.path.join(build, "agent", "vow")
    vowd = os.path.join(build, "agent", "vowd")
    workdir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "vow-dup-bench")
    os.makedirs(workdir, exist_ok=True)
    pipe = os.path.join(workdir, "dup.toml")
    with open(pipe, "w") as f:
        f.write(PIPELINE)
    items = os.path.join(workdir, "items")
    subprocess.run(["rm", "-rf", items, items + ".next"], check=True)
    os.makedirs(items)
    mesh = Mesh(vow, vowd, [pipe], prefix="vow-dup-")
    try:
        a = mesh.add("a", [("dup/sleep", 2)], sources=[("dup/items", items, True)])
        for k in range(1, agents):
            mesh.add(chr(ord("a") + k), [("dup/sleep", 2)])
        mesh.start()
        wait_until(f"{agents} live agents", lambda: all(
            sum(x["alive"] for x in ag.status()["agents"]) == agents for ag in mesh.agents), 60)
        nxt = items + ".next"
        os.makedirs(nxt)
        for i in range(n):
            with open(os.path.join(nxt, f"item-{i:06d}"), "w") as f:
                f.write(f"{i}\n")
        t0 = time.time()
        os.rename(nxt, items)
        wait_until(f"{n} jobs done", lambda: done_count(a) >= n, 1800, 0.5)
        wall = time.time() - t0
        time.sleep(1)  # a losing run's start may still be on its way to the log
        started = claimed = 0
        for ag in mesh.agents:
            with open(ag.log_path, errors="replace") as f:
                for line in f:
                    started += 1 if STARTED.search(line) else 0
                    claimed += 1 if CLAIMED.search(line) else 0
        out = {"agents": agents, "jobs": n, "executions": started,
               "duplicates_pct": 100.0 * (started - n) / n, "wall_s": round(wall, 2),
               "claims_per_job": claimed / n}
        print(json.dumps(out), flush=True)
        return out
    finally:
        mesh.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = [one_mesh(args.build, args.jobs, 1), one_mesh(args.build, args.jobs, args.agents)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    for r in rows:
        print(f"| {r['agents']} | {r['jobs']} | {r['executions']} | "
              f"{r['duplicates_pct']:.1f}% | {r['claims_per_job']:.2f} | {r['wall_s']} s |")


if __name__ == "__main__":
    main()
