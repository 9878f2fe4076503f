#!/usr/bin/python3
"""A stage that runs in a root file system given as an artifact (`root`, docs/sandbox.md,
"Environments"), with a real vowd and real bubblewrap. The root is a source: a directory
made of the host's /bin/sh, cat and ls, the shared libraries ldd names and the loader,
and a file only it has. The job sees that root as `/` (the file is there, the host's
python3 is not, `ls /` lists the root's entries and the sandbox's own), writes its output,
and lineage names the root. One file of the root changed makes another job, which runs.
A root without the command's program fails the job, saying so; an agent with sandbox =
"none" refuses the promise at `vow check`, and one whose bwrap does not work refuses to
start.

usage: stage_root_test.py VOW VOWD SCENARIO
Scenarios: root (the job in its root), refused (sandbox = "none"). Exit 77 (skipped) where bwrap cannot run or ldd is missing.
"""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import Mesh, check, run_scenario, wait_until  # noqa: E402

VOW, VOWD = sys.argv[1:3]
DONE, FAILED = 0, 1

PIPELINE = """[pipeline]
name = "rt"

[[source]]
name = "rootfs"

[[source]]
name = "input"

[[stage]]
name = "inroot"
inputs = ["rootfs", "input"]
root = "rootfs"
outputs = ["report"]
run = '''
{
  cat /etc/marker
  if [ -e /usr/bin/python3 ]; then echo python=present; else echo python=absent; fi
  if echo x > /planted 2> /dev/null; then echo slash=written; else echo slash=refused; fi
  cat "$VOW_IN_input"
  echo top:
  ls /
} > "$VOW_OUT_report"
'''

[[stage]]
name = "noprogram"
inputs = ["rootfs"]
root = "rootfs"
outputs = ["n"]
run = ["/usr/bin/env", "true"]
"""

PROGRAMS = ("/bin/sh", "/bin/cat", "/bin/ls")


def skip_reason():
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return "bwrap is not installed (Debian package bubblewrap)"
    p = subprocess.run([bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                        "--tmpfs", "/tmp", "--unshare-pid", "--unshare-net", "--die-with-parent",
                        "true"], capture_output=True, text=True)
    if p.returncode != 0:
        return f"bwrap does not run here: {p.stderr.strip()}"
    if not shutil.which("ldd"):
        return "ldd is not installed"
    return None


def make_root(path):
    """The programs and what ldd says they load, copied (an artifact holds no symbolic
    link, so each is a file at every path it is asked for by)."""
    os.makedirs(os.path.join(path, "etc"))
    files = set(PROGRAMS)
    for prog in PROGRAMS:
        out = subprocess.run(["ldd", prog], capture_output=True, text=True, check=True).stdout
        files.update(re.findall(r"(/\S+\.so[^\s]*)", out))
    for f in files:
        dst = path + f
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(f, dst)  # follows links
    with open(os.path.join(path, "etc", "marker"), "w") as f:
        f.write("only-in-root v1\n")


def jobs_of(agent, stage):
    return json.loads(agent.vow("jobs", "--stage", stage, "--json").stdout)["jobs"]


def report(agent, name):
    out = os.path.join(agent.mesh.root, name)
    agent.vow("get", "rt/inroot.report", "-o", out)
    with open(out) as f:
        return f.read()


def scenario_root():
    mesh = Mesh(VOW, VOWD, [], prefix="vow-root-")
    try:
        rootfs = os.path.join(mesh.root, "rootfs")
        make_root(rootfs)
        data = os.path.join(mesh.root, "input.txt")
        with open(data, "w") as f:
            f.write("input-text\n")
        pipeline = os.path.join(mesh.root, "rt.toml")
        with open(pipeline, "w") as f:
            f.write(PIPELINE)
        mesh.pipelines = [pipeline]
        a = mesh.add("a", [("rt/inroot", 1), ("rt/noprogram", 1)],
                     sources=[("rt/rootfs", rootfs, True), ("rt/input", data, False)])
        a.agent_lines = ['sandbox = "bwrap"']
        mesh.start()

        p = a.vow("wait", "rt/inroot", "--timeout", "60s", check_rc=False, timeout=90)
        check(p.returncode == DONE, f"inroot: rc {p.returncode}: {p.stderr}\n{a.tail()}")
        seen = report(a, "report-1")
        lines = seen.split("\n")
        check(lines[:4] == ["only-in-root v1", "python=absent", "slash=refused", "input-text"],
              f"what the job saw: {seen!r}")
        top = set(lines[lines.index("top:") + 1:]) - {""}
        # The sandbox's own /dev, /proc and /tmp, and the first directory of the job's
        # work directory, where bwrap mounts it.
        work_top = a.state.split("/")[1]
        want = set(os.listdir(rootfs)) | {"dev", "proc", "tmp", work_top}
        check(top == want, f"ls / in the job: {sorted(top)}, expected {sorted(want)}")

        # Lineage names the root.
        steps = json.loads(a.vow("lineage", "rt/inroot.report", "--json").stdout)
        text = json.dumps(steps)
        check('"root": "rootfs"' in text, f"lineage names the root: {text[:2000]}")
        human = a.vow("lineage", "rt/inroot.report").stdout
        check(re.search(r"^  root +rootfs$", human, re.M), f"vow lineage names the root: {human}")
        (first,) = jobs_of(a, "inroot")
        why = a.vow("why", first["id"]).stdout
        check("; root rootfs" in why, f"vow why names the root: {why}")

        # A root without the command's program: the job fails, saying what is missing.
        p = a.vow("wait", "rt/noprogram", "--timeout", "60s", check_rc=False, timeout=90)
        check(p.returncode == FAILED, f"noprogram: rc {p.returncode}: {p.stderr}")
        errors = [r.get("error", "") for j in jobs_of(a, "noprogram")
                  for r in j.get("results", []) if not r["ok"]]
        check(any("the stage's root 'rootfs' has no executable /usr/bin/env" in e
                  for e in errors), f"the failure says why: {errors}")

        # One file of the root changed: another job, run again.
        with open(os.path.join(rootfs, "etc", "marker"), "w") as f:
            f.write("only-in-root v2\n")
        p = a.vow("wait", "rt/inroot", "--timeout", "60s", check_rc=False, timeout=90)
        check(p.returncode == DONE, f"inroot again: rc {p.returncode}: {p.stderr}\n{a.tail()}")
        wait_until("a second inroot job", lambda: len(jobs_of(a, "inroot")) == 2, 30)
        check(report(a, "report-2").startswith("only-in-root v2\n"),
              "the second job ran in the changed root")
        started = re.findall(r"job \w+ rt/inroot started", a.tail(2000))
        check(len(started) == 2, f"inroot started twice: {started}")
    finally:
        mesh.cleanup()


def scenario_refused():
    """sandbox = "none": `vow check` on the agent file refuses the promise."""
    mesh = Mesh(VOW, VOWD, [], prefix="vow-root-")
    try:
        pipeline = os.path.join(mesh.root, "rt.toml")
        with open(pipeline, "w") as f:
            f.write(PIPELINE)
        mesh.pipelines = [pipeline]
        a = mesh.add("a", [("rt/inroot", 1)])
        a.agent_lines = ['sandbox = "none"']
        a.write_config([])
        p = subprocess.run([VOW, "check", a.config], capture_output=True, text=True)
        said = p.stdout + p.stderr
        check(p.returncode != 0 and "the stage runs in root 'rootfs'" in said and
              "only the bubblewrap sandbox makes" in said, f"vow check: rc {p.returncode}: {said}")
        # sandbox = "auto" where bwrap does not work (root without capabilities): the
        # agent refuses to start, with bwrap's reason.
        if os.geteuid() == 0 and shutil.which("setpriv"):
            a.agent_lines = ['sandbox = "auto"']
            a.write_config([])
            p = subprocess.run(["setpriv", "--bounding-set", "-all", "--inh-caps", "-all",
                                VOWD, "--config", a.config], capture_output=True, text=True,
                               timeout=30)
            check(p.returncode != 0 and "the stage runs in root 'rootfs'" in p.stderr and
                  "jobs here run without it" in p.stderr,
                  f"vowd without bwrap: rc {p.returncode}: {p.stderr}")
        else:
            print("not checked: vowd with sandbox = \"auto\" and no bwrap (needs root and "
                  "setpriv)")
    finally:
        mesh.cleanup()


if __name__ == "__main__":
    if sys.argv[3] == "root":
        why = skip_reason()
        if why:
            print(f"skipped: {why}")
            sys.exit(77)
    run_scenario({"root": scenario_root, "refused": scenario_refused}, sys.argv[3])
