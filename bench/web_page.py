#!/usr/bin/python3
"""The web view's answer time on a pipeline of 10,000 jobs (agent/web.h): one agent
runs a stage fanned out over a directory of N files (one job each), then every request
the pages make is timed from this side of a loopback HTTP connection.

usage: /usr/bin/python3 bench/web_page.py BUILD_DIR [--jobs N] [--requests N] [--capacity N] [--settle S]

Prints, per request, the median and 95th percentile over --requests answers, and the
size of the answer; a baseline: GET /healthz (a static answer from the same listener).
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from mesh import Mesh, free_port  # noqa: E402

PIPELINE = """[pipeline]
name = "big"

[[source]]
name = "files"

[[stage]]
name = "each"
inputs = ["files"]
foreach = "files"
outputs = ["out"]
run = 'cp "$VOW_IN_files" "$VOW_OUT_out"'

[[stage]]
name = "all"
inputs = ["each.out"]
outputs = ["n"]
run = 'ls "$VOW_IN_out" | wc -l > "$VOW_OUT_n"'
"""


def timed(conn, path, n):
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t0) * 1000)
        if r.status != 200:
            sys.exit(f"GET {path}: {r.status} {body[:200]!r}")
        size = len(body)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--capacity", type=int, default=8)
    ap.add_argument("--settle", type=float, default=10.0,
                    help="seconds to wait after the run before measuring")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    scratch = Mesh(os.path.join(build, "agent", "vow"), os.path.join(build, "agent", "vowd"), [],
                   prefix="vow-web-bench-")
    path = os.path.join(scratch.root, "big.toml")
    with open(path, "w") as f:
        f.write(PIPELINE)
    scratch.pipelines = [path]
    files = os.path.join(scratch.root, "files")
    os.makedirs(files)
    for i in range(args.jobs):
        with open(os.path.join(files, f"f{i:05d}"), "w") as f:
            f.write(f"{i}\n")
    a = scratch.add("a", [("big/each", args.capacity), ("big/all", 1)],
                    sources=[("big/files", files, False)], timing={"dead_after": "10s",
                                                                  "suspect_after": "5s",
                                                                  "heartbeat": "1s"})
    a.http_port = free_port()
    try:
        scratch.start()
        t0 = time.monotonic()
        p = a.vow("wait", "big", "--timeout", "60m", check_rc=False, timeout=3700)
        if p.returncode != 0:
            sys.exit(f"vow wait big: {p.returncode} {p.stderr}")
        print(f"{args.jobs} jobs run in {time.monotonic() - t0:.0f} s")
        # Let what follows a run (replication, the last statements) settle first.
        time.sleep(args.settle)
        conn = http.client.HTTPConnection("127.0.0.1", a.http_port, timeout=60)
        stage = json.loads(timed_body(conn, "/api/stage?pipeline=big&stage=each&limit=1"))
        total = stage["total"]
        last = max(0, total - 100)
        print(f"| request | median ms | p95 ms | bytes |")
        print(f"| --- | --- | --- | --- |")
        for label, req in [
                ("GET /healthz (baseline)", "/healthz"),
                ("GET / (the page)", "/"),
                ("GET /app.js", "/app.js"),
                ("GET /api/pipelines", "/api/pipelines"),
                ("GET /api/stage, first 100 jobs", "/api/stage?pipeline=big&stage=each"),
                ("GET /api/stage, last 100 jobs", f"/api/stage?pipeline=big&stage=each&offset={last}"),
                ("GET /api/stage?state=failed", "/api/stage?pipeline=big&stage=each&state=failed"),
                ("GET /api/job", "/api/job?id=" + stage["jobs"][0]["id"]),
                ("GET /api/mesh", "/api/mesh"),
                ("GET /api/status (for comparison)", "/api/status")]:
            timed(conn, req, 3)  # warm up
            med, p95, size = timed(conn, req, args.requests)
            print(f"| {label} | {med:.1f} | {p95:.1f} | {size} |")
        print(f"({total} jobs in stage big/each; {args.requests} requests each, one connection)")
        # The loop's side alone, over the control socket: the web view's answers next to
        # what `vow status` and `vow jobs` ask.
        try:
            import zmq
        except ImportError:
            print("(no python3-zmq here: run with /usr/bin/python3 for the loop's side alone)")
            return
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REQ)
        sock.connect("ipc://" + os.path.join(a.state, "control.sock"))
        print("| control request | median ms | p95 ms |")
        print("| --- | --- | --- |")
        for method, margs in [("status", {}), ("web_pipelines", {}),
                              ("web_stage", {"pipeline": "big", "stage": "each", "offset": 0,
                                             "limit": 100}),
                              ("jobs", {"stage": "each"})]:
            times = []
            for _ in range(max(5, args.requests // 3)):
                t0 = time.perf_counter()
                sock.send_json({"method": method, "args": margs})
                sock.recv()
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            print(f"| {method} | {statistics.median(times):.1f} | "
                  f"{times[min(len(times) - 1, int(len(times) * 0.95))]:.1f} |")
        sock.close(0)
        ctx.term()
    finally:
        scratch.cleanup()


def timed_body(conn, path):
    conn.request("GET", path)
    return conn.getresponse().read()


if __name__ == "__main__":
    main()
