#!/usr/bin/python3
"""What a query costs as the number of jobs grows: three real agents (capacity 2 each,
state on disk, HTTP on), a `foreach` stage of no-op shards, and per size:

  status      `vow status --json` wall time (the command line included), median of 7
  jobs_all    `vow jobs --json` (every job), median of 3
  jobs_page   one page: `vow jobs --json --limit 100` (builds without --limit: every job)
  idle_cpu    CPU of the three agents together once every job is done, in % of one
              core (HTTP on: the 500 ms snapshot included): the median of six 2 s
              windows, and (idle_*_min) the quietest window. In this machine the same
              traffic costs several times more kernel time in stretches of 10-20 s
              (BENCHMARKS.md, "Idle CPU in this machine"): the minimum is the figure
              least moved by them
  idle_settled the same, --settle seconds (30) later: once the work that follows a run
              (horizons, the last replication) is over
  idle_empty  the same over 10 s before the source version, with no job known yet
  suspect     times an agent marked a peer suspect during the run (a loop held up long
              enough for a peer to miss its heartbeats)
  restart     an agent killed (SIGKILL) once all is done and started again: seconds until
              its `vow status` shows every job done (the process start included)
  catch_up    a fourth agent (same promise, trusted from the start, never run) started
              once all is done: seconds until its `vow status` shows every job done
  ledger_mb   the size of an agent's ledger database (vow.db and its WAL) at the end
  live_mb     of which pages in use (pages freed by a ledger horizon are reused by the
              rows that follow: the file does not shrink), and the statements held

With --during S the run is not awaited: the queries are timed S seconds after the
source version, while jobs run (for sizes whose run takes too long here); idle CPU is
then not measured.

usage: bench/scale.py [--build DIR] [--sizes 1000,5000] [--during S] [--settle S] [--json FILE]
Prints one line per size and a Markdown table row each; BENCHMARKS.md is written by hand.
"""
import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mesh import Mesh, cpu_ticks, free_port, wait_until  # noqa: E402

PIPELINE = """
[pipeline]
name = "scale"

[[source]]
name = "items"

[[stage]]
name = "noop"
inputs = ["items"]
foreach = "items"
outputs = []
run = ["/bin/true"]
"""


def timed(agent, *args, timeout=300):
    t0 = time.perf_counter()
    p = agent.vow(*args, timeout=timeout)
    return time.perf_counter() - t0, p.stdout


UNANSWERED = [0]  # status polls the agent did not answer in time (its loop busy)


def done_count(agent):
    p = agent.vow("status", "--json", check_rc=False)
    if p.returncode != 0:
        UNANSWERED[0] += 1
        return 0
    st = json.loads(p.stdout)
    for p in st["pipelines"]:
        if p["name"] == "scale":
            for s in p["stages"]:
                if s["name"] == "noop":
                    return s["jobs"].get("done", 0)
    return 0


def has_limit(agent):
    p = agent.vow("jobs", "--help", check_rc=False)
    return "--limit" in p.stdout


def one_size(build, n, during, settle):
    UNANSWERED[0] = 0
    vow = os.path.join(build, "agent", "vow")
    vowd = os.path.join(build, "agent", "vowd")
    workdir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "vow-scale-bench")
    os.makedirs(workdir, exist_ok=True)
    pipe = os.path.join(workdir, "scale.toml")
    with open(pipe, "w") as f:
        f.write(PIPELINE)
    items = os.path.join(workdir, "items")
    subprocess.run(["rm", "-rf", items, items + ".next"], check=True)
    os.makedirs(items)
    mesh = Mesh(vow, vowd, [pipe], prefix="vow-scale-")
    try:
        a = mesh.add("a", [("scale/noop", 2)], sources=[("scale/items", items, True)])
        b = mesh.add("b", [("scale/noop", 2)])
        mesh.add("c", [("scale/noop", 2)])
        for ag in mesh.agents:
            ag.http_port = free_port()
        # The fourth agent: trusted (its key is written now) but started only at the end.
        d = mesh.add("d", [("scale/noop", 2)])
        mesh.agents.remove(d)
        mesh.start()
        wait_until("3 live agents", lambda: all(
            sum(x["alive"] for x in ag.status()["agents"]) == 3 for ag in mesh.agents), 60)
        hz = os.sysconf("SC_CLK_TCK")

        def idle_windows(windows=6, each=2.0):
            """(median, min) CPU % of one core of the three agents over `windows` windows."""
            pcts = []
            for _ in range(windows):
                c0 = sum(cpu_ticks(ag.proc.pid) for ag in mesh.agents[:3])
                time.sleep(each)
                c1 = sum(cpu_ticks(ag.proc.pid) for ag in mesh.agents[:3])
                pcts.append(100.0 * (c1 - c0) / hz / each)
            return statistics.median(pcts), min(pcts)

        time.sleep(2)
        idle_empty, idle_empty_min = idle_windows()
        nxt = items + ".next"
        os.makedirs(nxt)
        for i in range(n):
            with open(os.path.join(nxt, f"item-{i:06d}"), "w") as f:
                f.write(f"{i}\n")
        t0 = time.time()
        os.rename(nxt, items)
        cpu0 = sum(cpu_ticks(ag.proc.pid) for ag in mesh.agents)
        if during:
            time.sleep(during)
        else:
            wait_until(f"{n} jobs done", lambda: done_count(a) >= n, 3600, 1.0)
        run_s = time.time() - t0
        cpu1 = sum(cpu_ticks(ag.proc.pid) for ag in mesh.agents)
        done = done_count(a)
        status = statistics.median(timed(a, "status", "--json")[0] for _ in range(7))
        jobs_all = statistics.median(timed(a, "jobs", "--json")[0] for _ in range(3))
        if has_limit(a):
            page = statistics.median(
                timed(a, "jobs", "--json", "--limit", "100")[0] for _ in range(7))
        else:
            page = jobs_all
        idle = idle_settled = idle_min = idle_settled_min = None
        if not during:
            time.sleep(2)
            idle, idle_min = idle_windows()
            # Once the work that follows a run (horizons, the last replication) is over.
            time.sleep(settle)
            idle_settled, idle_settled_min = idle_windows()
        suspect = 0
        slow_turns = 0
        slow_ms = {}
        for ag in mesh.agents:
            with open(ag.log_path, errors="replace") as f:
                for line in f:
                    suspect += " is suspect" in line
                    if "slow turn: " not in line:
                        continue
                    slow_turns += 1
                    # "slow turn: T ms (lap A ms, lap B ms); ..."
                    laps = line.split("(", 1)[1].split(")", 1)[0]
                    for lap in laps.split(", "):
                        what, ms = lap.rsplit(" ", 2)[0], lap.rsplit(" ", 2)[1]
                        slow_ms[what] = slow_ms.get(what, 0) + int(ms)
        plans = {}
        for ag in mesh.agents:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{ag.http_port}/metrics", timeout=30) as r:
                    for line in r.read().decode().splitlines():
                        if line.startswith("vow_plans_made_total{"):
                            reason = line.split('reason="', 1)[1].split('"', 1)[0]
                            plans[reason] = plans.get(reason, 0) + int(float(line.split()[-1]))
            except OSError:
                pass
        restart = catch_up = None
        if not during:
            b.kill()
            t1 = time.perf_counter()
            b.start()
            wait_until("the restarted agent shows every job done",
                       lambda: done_count(b) >= n, 3600, 0.05)
            restart = time.perf_counter() - t1
            d.write_config([f"{x.id}@{x.endpoint}" for x in mesh.agents])
            t1 = time.perf_counter()
            d.start()
            mesh.agents.append(d)
            wait_until("the fourth agent shows every job done",
                       lambda: done_count(d) >= n, 3600, 0.05)
            catch_up = time.perf_counter() - t1
        db = os.path.join(b.state, "vow.db")
        ledger_mb = sum(os.path.getsize(db + sfx) for sfx in ("", "-wal")
                        if os.path.exists(db + sfx)) / 1e6
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            pages, free, page_size, rows = (
                conn.execute("PRAGMA page_count").fetchone()[0],
                conn.execute("PRAGMA freelist_count").fetchone()[0],
                conn.execute("PRAGMA page_size").fetchone()[0],
                conn.execute("SELECT count(*) FROM statements").fetchone()[0])
        finally:
            conn.close()
        out = {"jobs": n, "done": done, "run_s": run_s, "restart_s": restart,
               "catch_up_s": catch_up, "ledger_mb": ledger_mb,
               "live_mb": (pages - free) * page_size / 1e6, "statements": rows,
               "agent_cpu_ms_per_job": (cpu1 - cpu0) * 1000.0 / os.sysconf("SC_CLK_TCK") /
               max(done, 1),
               "status_s": status, "jobs_all_s": jobs_all, "jobs_page_s": page,
               "idle_cpu_pct": idle, "idle_settled_pct": idle_settled,
               "idle_empty_pct": idle_empty, "idle_min_pct": idle_min,
               "idle_settled_min_pct": idle_settled_min, "idle_empty_min_pct": idle_empty_min,
               "suspect": suspect,
               "slow_turns": slow_turns, "slow_turn_ms_by_lap": slow_ms,
               "plans_made": plans,
               "unanswered_polls": UNANSWERED[0]}
        print(json.dumps(out), flush=True)
        return out
    finally:
        mesh.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--during", type=float, default=0)
    ap.add_argument("--json")
    ap.add_argument("--settle", type=float, default=30.0)
    args = ap.parse_args()
    results = [one_size(os.path.abspath(args.build), int(n), args.during, args.settle)
               for n in args.sizes.split(",")]
    for r in results:
        idle = "-" if r["idle_cpu_pct"] is None else \
            f"{r['idle_cpu_pct']:.1f}% (min {r['idle_min_pct']:.1f}%)"
        if r.get("idle_settled_pct") is not None:
            idle += f", {r['idle_settled_pct']:.1f}% (min {r['idle_settled_min_pct']:.1f}%) settled"
        secs = lambda v: "-" if v is None else f"{v:.2f} s"  # noqa: E731
        print(f"| {r['jobs']:,} ({r['done']:,} done) | {r['status_s'] * 1000:.0f} ms | "
              f"{r['jobs_page_s'] * 1000:.0f} ms | {r['jobs_all_s'] * 1000:.0f} ms | {idle} | "
              f"(empty {r['idle_empty_pct']:.1f}%, min {r['idle_empty_min_pct']:.1f}%) | {r['suspect']} | {r['agent_cpu_ms_per_job']:.1f} ms | {secs(r['restart_s'])} | "
              f"{secs(r['catch_up_s'])} | {r['ledger_mb']:.1f} MB ({r['live_mb']:.1f} MB in use, "
              f"{r['statements']:,} statements) | {r['run_s']:.0f} s |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
