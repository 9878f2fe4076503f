#!/usr/bin/python3
"""`promtool check metrics` on the /metrics of a real agent that ran jobs and reads a
source (so every family, histograms by stage and source gauges included, has samples).
Skipped (exit 77) where promtool is not installed.

usage: promtool_test.py VOW VOWD
"""
import os
import shutil
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import Mesh, TestFailure, check, free_port, wait_until  # noqa: E402

VOW, VOWD = sys.argv[1:3]

PIPELINE = """[pipeline]
name = "prom"

[[source]]
name = "input"

[[stage]]
name = "shout"
inputs = ["input"]
outputs = ["out"]
run = 'tr a-z A-Z < "$VOW_IN_input" > "$VOW_OUT_out"'
"""


def main():
    promtool = shutil.which("promtool")
    if not promtool:
        print("skipped: promtool is not installed (it comes with Prometheus)")
        sys.exit(77)
    mesh = Mesh(VOW, VOWD, [], prefix="vow-promtool-")
    try:
        path = os.path.join(mesh.root, "prom.toml")
        with open(path, "w") as f:
            f.write(PIPELINE)
        mesh.pipelines = [path]
        data = os.path.join(mesh.root, "input.txt")
        with open(data, "w") as f:
            f.write("alpha\n")
        a = mesh.add("a", [("prom/shout", 1)], sources=[("prom/input", data, True)])
        a.http_port = free_port()
        mesh.add("b", [])  # a peer: a runs the job, so its histograms have samples
        mesh.start()
        p = a.vow("wait", "prom", "--timeout", "60s", check_rc=False, timeout=90)
        check(p.returncode == 0, f"vow wait: rc {p.returncode}: {p.stderr}")

        def scrape():
            with urllib.request.urlopen(f"http://127.0.0.1:{a.http_port}/metrics",
                                        timeout=10) as r:
                return r.read().decode()
        # /metrics is a snapshot the loop refreshes every 500 ms.
        body = wait_until("/metrics with the job done and the source read",
                          lambda: (lambda t: t if 'vow_source_ok{pipeline="prom",' in t and
                                   'state="done"} 1' in t and
                                   'vow_job_duration_seconds_count{pipeline="prom"' in t
                                   else None)(scrape()), 10)
        p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           text=True, timeout=60)
        check(p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(),
              f"promtool check metrics: rc {p.returncode}: {p.stdout}{p.stderr}")
        print("promtool check metrics: clean")
    finally:
        mesh.cleanup()


if __name__ == "__main__":
    try:
        main()
    except TestFailure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
