#!/usr/bin/python3
"""Ledger bytes against the number of jobs ever run: three real agents (capacity 2 each,
state on disk, `tests/integration/mesh.py`), a `foreach` stage of M no-op shards whose
every input file changes once per generation, so each generation is M new jobs and the
previous M are superseded (docs/storage.md, "Superseded jobs"). At each checkpoint of
jobs ever run (default 1,000, 10,000 and 100,000), once that generation is done and
the ledger has settled (a horizon applied after it, or 60 s passed), agent b's ledger
file is read:

  file_mb     vow.db and its WAL on disk
  live_mb     of which pages in use (SQLite reuses freed pages: the file does not shrink)
  statements  statements held, and of them results
  jobs        jobs `vow jobs` lists
  agent_cpu   CPU of the three agents per job since the start, in ms
  and the statement bytes of source versions, horizons and results (what still grows)

With --keep, every agent has `retire_superseded = false` (the policy off: the baseline).

usage: bench/retention.py [--build DIR] [--shards M] [--checkpoints 1000,10000,100000]
                          [--keep] [--json FILE]
Prints one JSON line per checkpoint and a Markdown table row each; BENCHMARKS.md is
written by hand.
"""
import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mesh import Mesh, cpu_ticks, wait_until  # noqa: E402

PIPELINE = """
[pipeline]
name = "ret"

[[source]]
name = "items"

[[stage]]
name = "noop"
inputs = ["items"]
foreach = "items"
outputs = []
run = ["/bin/true"]
"""


def done_ids(agent):
    p = agent.vow("jobs", "--json", "--stage", "noop", "--state", "done", "--limit", "100000",
                  check_rc=False, timeout=120)
    if p.returncode != 0:
        return set()
    return {j["id"] for j in json.loads(p.stdout)["jobs"]}


def ledger_stats(agent):
    db = os.path.join(agent.state, "vow.db")
    file_mb = sum(os.path.getsize(db + sfx) for sfx in ("", "-wal")
                  if os.path.exists(db + sfx)) / 1e6
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        kinds = dict(conn.execute("SELECT kind, count(*) FROM statements GROUP BY kind"))
        kind_bytes = dict(conn.execute(
            "SELECT kind, sum(length(bytes)) FROM statements GROUP BY kind"))
    finally:
        conn.close()
    return {"file_mb": file_mb, "live_mb": (pages - free) * size / 1e6,
            "statements": sum(kinds.values()), "results": kinds.get(5, 0),
            "source_versions": kinds.get(2, 0), "horizons": kinds.get(9, 0),
            "source_mb": kind_bytes.get(2, 0) / 1e6, "horizon_mb": kind_bytes.get(9, 0) / 1e6,
            "result_mb": kind_bytes.get(5, 0) / 1e6}


def horizons(agent):
    with open(agent.log_path, errors="replace") as f:
        return sum(1 for line in f if "horizon" in line and "applied" in line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--checkpoints", default="1000,10000,100000")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    m = args.shards
    checkpoints = [int(x) for x in args.checkpoints.split(",")]
    workdir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "vow-retention-bench")
    subprocess.run(["rm", "-rf", workdir], check=True)
    os.makedirs(workdir)
    pipe = os.path.join(workdir, "ret.toml")
    with open(pipe, "w") as f:
        f.write(PIPELINE)
    items = os.path.join(workdir, "items")
    os.makedirs(items)
    for i in range(m):
        with open(os.path.join(items, f"item-{i:06d}"), "w") as f:
            f.write(f"{i} 0\n")
    mesh = Mesh(os.path.join(build, "agent", "vow"), os.path.join(build, "agent", "vowd"),
                [pipe], prefix="vow-retention-")
    out = []
    try:
        a = mesh.add("a", [("ret/noop", 2)], sources=[("ret/items", items, True)])
        b = mesh.add("b", [("ret/noop", 2)])
        mesh.add("c", [("ret/noop", 2)])
        if args.keep:
            for ag in mesh.agents:
                ag.agent_lines.append("retire_superseded = false")
        mesh.start()
        cpu0 = sum(cpu_ticks(ag.proc.pid) for ag in mesh.agents)
        previous = set()
        ever = 0
        g = 0
        t0 = time.time()
        while checkpoints:
            if g > 0:
                for i in range(m):
                    with open(os.path.join(items, f"item-{i:06d}"), "w") as f:
                        f.write(f"{i} {g}\n")
            wait_until(f"generation {g + 1} done", lambda: (
                lambda ids: len(ids) == m and not ids & previous)(done_ids(a)), 1800, 0.5)
            previous = done_ids(a)
            ever += m
            g += 1
            if ever < checkpoints[0]:
                continue
            checkpoints.pop(0)
            cpu1 = sum(cpu_ticks(ag.proc.pid) for ag in mesh.agents)
            # Settled: a horizon applied after this generation, or a minute passed.
            h0 = horizons(b)
            try:
                wait_until("a horizon after the generation", lambda: horizons(b) > h0, 60, 0.5)
            except Exception:
                pass
            time.sleep(1)
            jobs = json.loads(b.vow("jobs", "--json", "--limit", "100000", timeout=300).stdout)
            row = {"jobs_ever": ever, "shards": m, "keep": args.keep, "wall_s": time.time() - t0,
                   "agent_cpu_ms_per_job": (cpu1 - cpu0) * 1000.0 / os.sysconf("SC_CLK_TCK") /
                   ever, "jobs_listed": len(jobs["jobs"]), "horizons_applied": horizons(b)}
            row.update(ledger_stats(b))
            print(json.dumps(row), flush=True)
            out.append(row)
    finally:
        mesh.cleanup()
    for r in out:
        print(f"| {r['jobs_ever']:,} | {'kept' if r['keep'] else 'retired'} | "
              f"{r['file_mb']:.1f} MB | {r['live_mb']:.1f} MB | {r['statements']:,} | "
              f"{r['results']:,} | {r['jobs_listed']:,} | {r['agent_cpu_ms_per_job']:.1f} ms | "
              f"{r['source_versions']} ({r['source_mb']:.2f} MB) | "
              f"{r['horizons']} ({r['horizon_mb']:.2f} MB) | {r['wall_s']:.0f} s |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
