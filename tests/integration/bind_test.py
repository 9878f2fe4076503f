#!/usr/bin/python3
"""Promises that bind, with real vowd processes on loopback: only the definitions the
agents promise now are planned (an edited stage after a restart or a SIGHUP; two agents
promising different definitions), `vow retry` runs a failed job again, and `vow wait`
waits for the sources as they are on disk now.

usage: bind_test.py VOW VOWD SCENARIO
Scenarios: edit-restart, edit-sighup, conflict, retry, wait-fresh, watch-nested,
source-health, source-stop.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import Mesh, TestFailure, check, free_port, run_scenario, wait_until  # noqa: E402

VOW, VOWD = sys.argv[1:3]

# Exit status of vow wait (docs/cli.md).
DONE, FAILED, UNKNOWN, TIMEOUT = 0, 1, 3, 4

PIPELINE = """[pipeline]
name = "bind"

[[source]]
name = "input"

[[stage]]
name = "shout"
inputs = ["input"]
outputs = ["out"]
run = {run}

[[stage]]
name = "lines"
inputs = ["shout.out"]
outputs = ["n"]
run = 'wc -l < "$VOW_IN_out" | tr -d " " > "$VOW_OUT_n"'
"""
UPPER = """'tr a-z A-Z < "$VOW_IN_input" > "$VOW_OUT_out"'"""
REVERSED = """'rev < "$VOW_IN_input" > "$VOW_OUT_out"'"""


def write_pipeline(path, run):
    with open(path, "w") as f:
        f.write(PIPELINE.format(run=run))


def make_mesh(run, timing=None):
    """Two agents on one pipeline file: a provides the watched source and both run every
    stage."""
    scratch = tempfile.mkdtemp(prefix="vow-bind-file-")
    path = os.path.join(scratch, "bind.toml")
    write_pipeline(path, run)
    mesh = Mesh(VOW, VOWD, [path], prefix="vow-bind-")  # copies the file into mesh.root
    shutil.rmtree(scratch)
    data = os.path.join(mesh.root, "input.txt")
    with open(data, "w") as f:
        f.write("alpha\nbeta\n")
    stages = [("bind/shout", 1), ("bind/lines", 1)]
    mesh.add("a", stages, sources=[("bind/input", data, True)], timing=timing)
    mesh.add("b", stages, timing=timing)
    return mesh, data


def vow_wait(agent, target, timeout="30s", proc_timeout=60):
    return agent.vow("wait", target, "--timeout", timeout, check_rc=False, timeout=proc_timeout)


def get(agent, ref):
    out = os.path.join(agent.mesh.root, f"got-{time.monotonic_ns()}")
    agent.vow("get", ref, "-o", out)
    with open(out) as f:
        return f.read()


def stage_of(status, pipeline, stage):
    for p in status["pipelines"]:
        if p["name"] == pipeline:
            for s in p["stages"]:
                if s["name"] == stage:
                    return s, p
    return None, None


def stage_digest(pipeline_file, stage):
    """The digest of a stage as vow check computes it."""
    p = subprocess.run([VOW, "check", "--json", pipeline_file], capture_output=True, text=True)
    for pl in json.loads(p.stdout)["pipelines"]:
        for s in pl["stages"]:
            if s["name"] == stage:
                return s["digest"]
    raise TestFailure(f"vow check found no stage {stage} in {pipeline_file}")


def settled_on(agent, digest):
    """The agent plans the definition `digest` of bind/shout, with no conflict."""
    s, p = stage_of(agent.status(), "bind", "shout")
    return s is not None and s.get("digest") == digest and not p.get("conflicts")


def own_promise(agent, stage):
    """The stage digest the agent's own current advert promises for bind/STAGE."""
    for x in json.loads(agent.vow("promises", "--json").stdout)["agents"]:
        if x["self"]:
            for p in x["promises"]:
                if p["pipeline"] == "bind" and p["stage"] == stage:
                    return p["stage_digest"]
    return None


def check_edit(reload):
    """The command of a stage is edited after a first run; `reload` makes the agents read
    it. vow wait, asked as soon as the agents promise the edited stage, waits for the new
    command's output; nothing is left ready."""
    mesh, _ = make_mesh(UPPER)
    try:
        mesh.start()
        a, b = mesh.agents
        p = vow_wait(b, "bind")
        check(p.returncode == DONE, f"first wait: rc {p.returncode}: {p.stderr}")
        check(get(b, "bind/shout.out") == "ALPHA\nBETA\n", "first output")
        write_pipeline(mesh.pipelines[0], REVERSED)
        new = stage_digest(mesh.pipelines[0], "shout")
        reload(mesh)
        for ag in mesh.agents:  # a restarted agent promises it at once; SIGHUP takes a moment
            wait_until(f"{ag.name} to promise the edited stage",
                       lambda: own_promise(ag, "shout") == new, 20)
        for ag in mesh.agents:
            p = vow_wait(ag, "bind")
            check(p.returncode == DONE, f"wait after the edit on {ag.name}: rc {p.returncode}: "
                  f"{p.stderr}\n{ag.tail()}")
            check(get(ag, "bind/shout.out") == "ahpla\nateb\n",
                  f"output after the edit on {ag.name}")
            check(get(ag, "bind/lines.n").strip() == "2", "downstream output")
            check(settled_on(ag, new), f"{ag.name} plans the edited stage: {ag.status()}")
            s, _ = stage_of(ag.status(), "bind", "shout")
            check(s["jobs"]["ready"] == 0 and s["jobs"]["done"] == 1 and
                  s["jobs"]["superseded"] >= 1, f"shout jobs on {ag.name}: {s['jobs']}")
    finally:
        mesh.cleanup()


def restart_all(mesh):
    for ag in mesh.agents:
        ag.kill(signal.SIGTERM)
        sock = os.path.join(ag.state, "control.sock")
        if os.path.exists(sock):
            os.unlink(sock)
    for ag in mesh.agents:
        ag.start()


def sighup_all(mesh):
    for ag in mesh.agents:
        ag.proc.send_signal(signal.SIGHUP)


def scenario_edit_restart():
    check_edit(restart_all)


def scenario_edit_sighup():
    check_edit(sighup_all)


def scenario_conflict():
    """Agents a and b load different definitions of one stage: both are current, a
    conflict shown by vow status (which agent promises which) and found by vow check."""
    mesh, _ = make_mesh(UPPER)
    try:
        a, b = mesh.agents
        other = os.path.join(mesh.root, "bind-b.toml")
        write_pipeline(other, REVERSED)
        b.pipelines = [other]
        a.http_port = free_port()
        mesh.start()
        old = stage_digest(mesh.pipelines[0], "shout")
        new = stage_digest(other, "shout")

        def conflict(ag):
            _, p = stage_of(ag.status(), "bind", "shout")
            return p and p.get("conflicts")

        for ag in (a, b):
            conflicts = wait_until(f"{ag.name} to show the conflict", lambda: conflict(ag), 20)
            check(len(conflicts) == 1 and conflicts[0]["stage"] == "shout", f"{conflicts}")
            by_digest = {d["digest"]: sorted(x["name"] for x in d["agents"])
                         for d in conflicts[0]["definitions"]}
            check(by_digest == {old: ["a"], new: ["b"]}, f"conflict on {ag.name}: {by_digest}")
            check(conflicts[0]["planned"] == min(old, new), f"planned: {conflicts[0]}")
        def metric():
            url = f"http://127.0.0.1:{a.http_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as r:
                return "\nvow_stage_conflicts 1\n" in r.read().decode()

        wait_until("/metrics to count the conflict", metric, 10)
        human = a.vow("status").stdout
        check("conflict" in human and "shout" in human, f"status:\n{human}")
        wait_until("the conflict warning in a's log",
                   lambda: "conflicting definitions" in a.tail(200), 10)
        check(a.tail(400).count("conflicting definitions") == 1, "the warning is logged once")
        # vow check tells conflicting copies (an error at both definitions) from identical
        # ones (fine).
        p = subprocess.run([VOW, "check", mesh.pipelines[0], other], capture_output=True,
                           text=True)
        check(p.returncode == 1, f"check of conflicting copies: rc {p.returncode}")
        check(f"{other}:" in p.stderr and f"{mesh.pipelines[0]}:" in p.stderr and
              "differs from its definition at" in p.stderr, f"check:\n{p.stderr}")
        copy = os.path.join(mesh.root, "bind-copy.toml")
        write_pipeline(copy, UPPER)
        p = subprocess.run([VOW, "check", mesh.pipelines[0], copy], capture_output=True,
                           text=True)
        check(p.returncode == 0, f"check of identical copies: rc {p.returncode}: {p.stderr}")
    finally:
        mesh.cleanup()


def scenario_retry():
    """A stage runs a tool that does not exist yet: its job fails past its retries (vow
    wait says 1); once the tool exists, vow retry runs it again and the pipeline
    completes."""
    # Not under /tmp: a job in the sandbox has a /tmp of its own (docs/sandbox.md).
    tools = tempfile.mkdtemp(prefix="vow-bind-tools-", dir="/var/tmp")
    tool = os.path.join(tools, "bin", "shout.sh")
    mesh, _ = make_mesh(f"""'{tool} < "$VOW_IN_input" > "$VOW_OUT_out"'""")
    try:
        mesh.start()
        a, b = mesh.agents
        p = vow_wait(b, "bind")
        check(p.returncode == FAILED and "stage shout" in p.stderr,
              f"wait with the tool missing: rc {p.returncode}: {p.stderr}")
        p = b.vow("retry", "bind/lines", check_rc=False)
        check(p.returncode == 1 and "no job failed" in p.stderr, f"retry of nothing: {p.stderr}")
        os.makedirs(os.path.dirname(tool))
        with open(tool, "w") as f:
            f.write("#!/bin/sh\ntr a-z A-Z\n")
        os.chmod(tool, 0o755)
        p = b.vow("retry", "bind/shout")
        check("retrying 1 job" in p.stdout, f"retry: {p.stdout}")
        p = vow_wait(a, "bind")
        check(p.returncode == DONE, f"wait after the retry: rc {p.returncode}: {p.stderr}")
        check(get(a, "bind/shout.out") == "ALPHA\nBETA\n", "output after the retry")
        jobs = json.loads(a.vow("jobs", "--stage", "shout", "--json").stdout)["jobs"]
        done = [j for j in jobs if j["state"] == "done"]
        check(len(done) == 1 and any(not r["ok"] for r in done[0]["results"]),
              f"the retried job keeps its failure: {jobs}")
        # The signed request is in every ledger, and verifies (live and from the file).
        b.vow("verify")
        p = subprocess.run([VOW, "verify", "--state-dir", a.state], capture_output=True,
                           text=True)
        check(p.returncode == 0, f"offline verify: {p.stdout}{p.stderr}")
        p = a.vow("retry", done[0]["id"], check_rc=False)
        check(p.returncode == 1 and "not failed" in p.stderr, f"retry of a done job: {p.stderr}")
    finally:
        mesh.cleanup()
        shutil.rmtree(tools, ignore_errors=True)


def scenario_wait_fresh():
    """vow wait right after a change to a watched source waits for the new version and
    the new output; an unknown pipeline or stage is an error at once (exit 3)."""
    mesh, data = make_mesh(UPPER)
    try:
        mesh.start()
        a, b = mesh.agents
        p = vow_wait(a, "bind")
        check(p.returncode == DONE, f"first wait: rc {p.returncode}: {p.stderr}")
        lines = ["alpha", "beta"]
        for word in ("gamma", "delta", "epsilon"):
            with open(data, "a") as f:
                f.write(word + "\n")
            lines.append(word)
            p = vow_wait(a, "bind")
            check(p.returncode == DONE, f"wait after adding {word}: rc {p.returncode}: {p.stderr}")
            got = get(a, "bind/shout.out")
            check(got == "".join(x.upper() + "\n" for x in lines),
                  f"after adding {word}, vow get gave {got!r}")
            check(get(a, "bind/lines.n").strip() == str(len(lines)), "line count")
        # One stage alone, also right after a change.
        with open(data, "a") as f:
            f.write("zeta\n")
        p = vow_wait(a, "bind/shout")
        check(p.returncode == DONE, f"wait bind/shout: rc {p.returncode}: {p.stderr}")
        check(get(a, "bind/shout.out").endswith("ZETA\n"), "stage output after the change")
        for target in ("nosuch", "bind/nosuch"):
            t0 = time.monotonic()
            p = vow_wait(b, target)
            check(p.returncode == UNKNOWN and time.monotonic() - t0 < 5,
                  f"wait {target}: rc {p.returncode}: {p.stderr}")
    finally:
        mesh.cleanup()


# Every file of a directory source, by its path, in order.
LISTING = """'''cd "$VOW_IN_input" && find . -type f | LC_ALL=C sort | while read -r f; do echo "== $f"; cat "$f"; done > "$VOW_OUT_out"'''"""


def listing(root):
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out.append("./" + os.path.relpath(p, root))
    text = ""
    for rel in sorted(out, key=lambda x: x.encode()):
        with open(os.path.join(root, rel)) as f:
            text += f"== {rel}\n" + f.read()
    return text


def scenario_watch_nested():
    """A watched directory source: vow wait after a change deep inside it, in a directory
    created since the agent started, and in one moved within it, waits for a version
    with the change (the agent looks only into the directories inotify named)."""
    mesh, data = make_mesh(LISTING)
    os.unlink(data)
    tree = data  # the source's path, now a directory
    os.makedirs(os.path.join(tree, "a", "b"))
    with open(os.path.join(tree, "a", "b", "c.txt"), "w") as f:
        f.write("alpha\n")
    with open(os.path.join(tree, "top.txt"), "w") as f:
        f.write("top\n")
    try:
        mesh.start()
        a, _ = mesh.agents

        def settled(what):
            p = vow_wait(a, "bind")
            check(p.returncode == DONE, f"wait after {what}: rc {p.returncode}: {p.stderr}")
            got = get(a, "bind/shout.out")
            check(got == listing(tree), f"after {what}, vow get gave {got!r}, not "
                  f"{listing(tree)!r}")
            # Files changed within the racy window (3 s) are read again by every check,
            # and their directories walked without being named: once they are older, a
            # check remembers them, and then only inotify can say they changed.
            newest = max(os.lstat(os.path.join(d, x)).st_ctime
                         for d, dirs, files in os.walk(tree) for x in dirs + files + ["."])
            wait_until("the files older than the racy window",
                       lambda: time.time() > newest + 3.5, 10)
            p = vow_wait(a, "bind")
            check(p.returncode == DONE, f"wait once {what} is old: rc {p.returncode}")

        settled("the start")
        with open(os.path.join(tree, "a", "b", "c.txt"), "a") as f:
            f.write("beta\n")
        settled("a change two directories down")
        os.makedirs(os.path.join(tree, "a", "new", "deeper"))
        with open(os.path.join(tree, "a", "new", "deeper", "d.txt"), "w") as f:
            f.write("delta\n")
        settled("a new directory tree")
        with open(os.path.join(tree, "a", "new", "deeper", "d.txt"), "a") as f:
            f.write("epsilon\n")
        settled("a change in the new tree")
        os.rename(os.path.join(tree, "a", "new"), os.path.join(tree, "moved"))
        settled("a directory moved within the source")
        with open(os.path.join(tree, "moved", "deeper", "d.txt"), "a") as f:
            f.write("zeta\n")
        settled("a change in the moved directory")
        shutil.rmtree(os.path.join(tree, "a", "b"))
        settled("a directory removed")
    finally:
        mesh.cleanup()


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


def source_of(status, name):
    for src in status.get("sources", []):
        if src["pipeline"] == "bind" and src["source"] == name:
            return src
    return None


def scenario_source_health():
    """A source path that is missing, then a symlink, shows in vow status (human and
    --json), /api/status, /metrics and vow wait, with its path and since when; once the
    file is there again the error clears and the pipeline runs."""
    mesh, data = make_mesh(UPPER)
    os.unlink(data)
    try:
        a, b = mesh.agents
        a.http_port = free_port()
        t0 = time.time()
        mesh.start()
        src = wait_until("the missing source reported",
                         lambda: (lambda x: x if x and x["state"] == "error" else None)(
                             source_of(a.status(), "input")), 30)
        check(src["path"] == data, f"the source's path: {src}")
        check(data in src["error"] and "no such file" in src["error"].lower(),
              f"the error names the path and what is wrong: {src}")
        check(t0 - 1 <= src["error_since_ms"] / 1000 <= time.time() + 1,
              f"error_since_ms is when it was first seen: {src}")
        check(src["snapshot"] is None and src["last_ok_ms"] == 0, f"never read: {src}")
        human = a.vow("status").stdout
        check("bind/input" in human and data in human and "error" in human
              and "no such file" in human, f"vow status shows the error:\n{human}")
        # The HTTP answers are snapshots the loop refreshes every 500 ms.
        wait_until("/api/status names the error", lambda: (source_of(
            json.loads(http_get(a.http_port, "/api/status")), "input") or {}).get(
                "error") == src["error"], 10)
        labels = f'pipeline="bind",source="input",path="{data}"'
        metrics = wait_until("/metrics shows the error", lambda: (lambda m: m if (
            f"vow_source_ok{{{labels}}} 0" in m) else None)(http_get(a.http_port, "/metrics")), 10)
        check(f"vow_source_error_since_timestamp_seconds{{{labels},error=" in metrics,
              "vow_source_error_since_timestamp_seconds with the error in /metrics")
        p = vow_wait(a, "bind", "2s")
        check(p.returncode == TIMEOUT and "cannot be read" in p.stderr and data in p.stderr,
              f"vow wait names the source: rc {p.returncode}: {p.stderr}")
        # b provides nothing: no sources in its status.
        check(b.status()["sources"] == [], "b provides no source")

        with open(data, "w") as f:
            f.write("alpha\n")
        src = wait_until("the error cleared",
                         lambda: (lambda x: x if x and x["state"] == "ok" else None)(
                             source_of(a.status(), "input")), 30)
        check("error" not in src and "error_since_ms" not in src and src["snapshot"]
              and src["last_ok_ms"] / 1000 >= t0 - 1, f"a readable source: {src}")
        p = vow_wait(a, "bind")
        check(p.returncode == DONE, f"wait once readable: rc {p.returncode}: {p.stderr}")
        check(get(a, "bind/shout.out") == "ALPHA\n", "the output of the created source")
        metrics = wait_until("/metrics once readable", lambda: (lambda m: m if (
            f"vow_source_ok{{{labels}}} 1" in m) else None)(http_get(a.http_port, "/metrics")), 10)
        check(
              "vow_source_error_since_timestamp_seconds{" not in metrics,
              "/metrics once readable")
        check("error" not in a.vow("status").stdout.split("sources provided here")[1],
              "vow status once readable")

        # A symlink in its place is refused, and says so; the last snapshot stays.
        real = data + ".real"
        with open(real, "w") as f:
            f.write("beta\n")
        os.unlink(data)
        os.symlink(real, data)
        src = wait_until("the symlink reported",
                         lambda: (lambda x: x if x and x["state"] == "error" else None)(
                             source_of(a.status(), "input")), 30)
        check("symbolic link" in src["error"] and src["snapshot"],
              f"a symlink is named as such, the last snapshot kept: {src}")
    finally:
        mesh.cleanup()


COUNT_PIPELINE = """[pipeline]
name = "bind"

[[source]]
name = "input"

[[stage]]
name = "count"
inputs = ["input"]
outputs = ["n"]
run = 'ls "$VOW_IN_input" | wc -l | tr -d " " > "$VOW_OUT_n"'
"""


def scenario_source_stop():
    """SIGTERM while the agent imports a large source directory: vowd exits at once
    rather than walking on through the directory, and the next start imports it whole."""
    files = 10000
    scratch = tempfile.mkdtemp(prefix="vow-bind-file-")
    path = os.path.join(scratch, "bind.toml")
    with open(path, "w") as f:
        f.write(COUNT_PIPELINE)
    mesh = Mesh(VOW, VOWD, [path], prefix="vow-bind-")
    shutil.rmtree(scratch)
    corpus = os.path.join(mesh.root, "corpus")
    os.makedirs(corpus)
    for i in range(files):
        with open(os.path.join(corpus, f"f{i:05d}"), "w") as f:
            f.write(f"{i}\n")
    a = mesh.add("a", [("bind/count", 1)], sources=[("bind/input", corpus, True)])
    try:
        t0 = time.monotonic()
        mesh.start()
        # The import is under way: the source has no snapshot yet.
        wait_until("the import to start", lambda: "source" in a.tail(40) or
                   time.monotonic() - t0 > 1, 10)
        src = source_of(a.status(), "input")
        check(src and src["state"] == "unchecked",
              f"the import ended before the stop (make the directory larger): {src}")
        a.proc.send_signal(signal.SIGTERM)
        t1 = time.monotonic()
        try:
            a.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"vowd still running 20 s after SIGTERM: {a.tail()}")
        stopped = time.monotonic() - t1
        check(a.proc.returncode == 0, f"vowd exit status {a.proc.returncode}: {a.tail()}")
        a.start()
        p = vow_wait(a, "bind", "200s", proc_timeout=220)
        imported = time.monotonic() - t1 - stopped
        check(p.returncode == DONE, f"wait after the restart: rc {p.returncode}: {p.stderr}")
        check(get(a, "bind/count.n").strip() == str(files), "the restart imported every file")
        # Stopping took a small part of what the import takes (not a wall-clock bound on
        # a shared machine: a ratio of two times of the same run).
        print(f"stopped {stopped:.2f} s, import {imported:.1f} s")
        check(stopped < imported / 3,
              f"stopping took {stopped:.1f} s, the whole import {imported:.1f} s")
    finally:
        mesh.cleanup()


SCENARIOS = {
    "source-stop": scenario_source_stop,
    "source-health": scenario_source_health,
    "edit-restart": scenario_edit_restart,
    "edit-sighup": scenario_edit_sighup,
    "conflict": scenario_conflict,
    "retry": scenario_retry,
    "wait-fresh": scenario_wait_fresh,
    "watch-nested": scenario_watch_nested,
}

if __name__ == "__main__":
    run_scenario(SCENARIOS, sys.argv[3])
