#!/usr/bin/python3
"""System calls and syncs per job on one agent: vowd alone, under `strace -ff`, runs a
foreach stage over a source directory of N files, once with N1 and once with N2 files;
the difference of the two counts divided by N2 - N1 is the cost per job, start-up and
idle work cancelled out. The jobs' own processes (supervisor shell and command) are left
out: only vowd's threads are counted.

usage: bench/syscalls.py [--build DIR] [--jobs N1,N2] [--stage noop|log-and-output]

  noop            the job is `/bin/true`: no output, empty logs (bench/run's throughput)
  log-and-output  the job prints a line and writes one output file
"""
import argparse
import collections
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mesh import Mesh, wait_until  # noqa: E402

STAGES = {
    "noop": 'outputs = []\nrun = ["/bin/true"]\n',
    "log-and-output": 'outputs = ["o"]\n'
                      'run = ["/bin/sh", "-c", "echo a log line; echo \\"$VOW_SHARD\\" > '
                      '\\"$VOW_OUT_o\\""]\n',
}
SYNCS = ("fsync", "fdatasync", "syncfs")


def count(build, stage, jobs):
    """Syscall counts of vowd's threads over a run of `jobs` jobs."""
    work = tempfile.mkdtemp(prefix="vow-syscalls-")
    pipe = os.path.join(work, "calls.toml")
    with open(pipe, "w") as f:
        f.write('[pipeline]\nname = "calls"\n\n[[source]]\nname = "items"\n\n'
                '[[stage]]\nname = "job"\ninputs = ["items"]\nforeach = "items"\n' +
                STAGES[stage])
    items = os.path.join(work, "items")
    os.makedirs(items)
    trace = os.path.join(work, "trace")
    os.makedirs(trace)
    mesh = Mesh(os.path.join(build, "agent", "vow"), os.path.join(build, "agent", "vowd"), [pipe])
    try:
        a = mesh.add("a", [("calls/job", 2)], sources=[("calls/items", items, True)],
                     prefix=("strace", "-ff", "-o", os.path.join(trace, "t")))
        mesh.start()
        time.sleep(1.0)
        nxt = items + ".next"
        os.makedirs(nxt)
        for i in range(jobs):
            with open(os.path.join(nxt, f"item-{i:05d}"), "w") as f:
                f.write(f"{i}\n")
        os.rename(nxt, items)  # one new source version

        def done():
            with open(a.log_path, errors="replace") as f:
                return len(re.findall(r"result: job \w+ epoch \d+ succeeded", f.read())) >= jobs
        wait_until(f"{jobs} results", done, 600, 0.2)
        time.sleep(0.5)
        # SIGTERM to vowd itself (strace's child), then strace exits.
        kids = subprocess.run(["pgrep", "-P", str(a.proc.pid)], capture_output=True,
                              text=True).stdout.split()
        for k in kids:
            os.kill(int(k), signal.SIGTERM)
        a.proc.wait(timeout=60)
    finally:
        mesh.cleanup()
    calls = collections.Counter()
    for path in glob.glob(os.path.join(trace, "t.*")):
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
        # A job's process execs something else than vowd.
        if any(l.startswith("execve(") and "vowd" not in l.split(",")[0] for l in lines):
            continue
        for line in lines:
            m = re.match(r"^(\w+)\(", line)
            if m:
                calls[m.group(1)] += 1
    subprocess.run(["rm", "-rf", work], check=True)
    return calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--jobs", default="20,100")
    ap.add_argument("--stage", default="noop", choices=sorted(STAGES))
    args = ap.parse_args()
    n1, n2 = (int(x) for x in args.jobs.split(","))
    c1 = count(args.build, args.stage, n1)
    c2 = count(args.build, args.stage, n2)
    per = {k: (c2[k] - c1[k]) / (n2 - n1) for k in set(c1) | set(c2)}
    total = sum(per.values())
    syncs = sum(per.get(k, 0) for k in SYNCS)
    print(f"{args.stage}: per job (difference of {n2} and {n1} jobs): {total:.0f} system calls, "
          f"{syncs:.2f} syncs (" + ", ".join(f"{k} {per.get(k, 0):.2f}" for k in SYNCS) + ")")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        if v >= 1.0:
            print(f"  {k:16s} {v:7.2f}")


if __name__ == "__main__":
    main()
