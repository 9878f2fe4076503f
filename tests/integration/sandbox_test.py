#!/usr/bin/python3
"""Jobs in the sandbox (docs/sandbox.md), with a real vowd and real bubblewrap: a job
cannot read the agent's identity key or state directory, cannot write its inputs or
outside its work directory, and has no network unless its stage says `network = true`;
a hard-linked output is refused, naming it; a job over its stage's `memory` fails,
naming the limit. With `sandbox = "none"` the same probe sees everything (so the probe
can tell), and a hard link to a file outside the job is refused at import.

usage: sandbox_test.py VOW VOWD SCENARIO
Scenarios: sandboxed, unsandboxed, restart (a sandboxed job re-adopted after the agent's
SIGKILL), fallback (bwrap made to fail: sandbox = "auto"
runs jobs unsandboxed with a warning, "bwrap" refuses to start), cgroups (limits through
a cgroup per job: memory and pids hits named, a job re-adopted with its cgroup, none
left after), rlimits (job_limits = "rlimits": the limits as rlimits). Exit 77 (skipped)
where bwrap cannot run, or cannot be made to fail, or (cgroups) where this host gives
the agent no writable cgroup with the memory controller.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import Mesh, check, run_scenario, wait_until  # noqa: E402

VOW, VOWD = sys.argv[1:3]
DONE, FAILED = 0, 1

# Each line of the report says what the job could do. Paths and the port come in `env`.
PROBE = r"""
{
  if cat "$STATE/identity" > /dev/null 2>&1; then echo identity=readable; else echo identity=hidden; fi
  if [ -e "$STATE/vow.db" ] || [ -d "$STATE/artifacts" ]; then echo state=visible; else echo state=hidden; fi
  if echo x > "$OUTSIDE/escape" 2> /dev/null; then echo outside=written; else echo outside=refused; fi
  echo x > "$STATE/planted" 2> /dev/null
  if echo x >> "$VOW_IN_input" 2> /dev/null; then echo input=written; else echo input=refused; fi
  if python3 -c 'import os, socket; socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), 3).close()' 2> /dev/null
  then echo network=connected; else echo network=refused; fi
} > "$VOW_OUT_report"
"""

PIPELINE = """[pipeline]
name = "sbx"

[[source]]
name = "input"

[[stage]]
name = "probe"
inputs = ["input"]
outputs = ["report"]
env = {{ STATE = "{state}", OUTSIDE = "{outside}", PORT = "{port}" }}
run = '''{probe}'''

[[stage]]
name = "online"
inputs = ["input"]
outputs = ["report"]
network = true
env = {{ STATE = "{state}", OUTSIDE = "{outside}", PORT = "{port}", ONLINE = "1" }}
run = '''{probe}'''

[[stage]]
name = "linked"
inputs = ["input"]
outputs = ["h"]
env = {{ SECRET = "{secret}" }}
run = 'ln "$SECRET" "$VOW_OUT_h" 2> /dev/null || {{ echo made here > mine; ln mine "$VOW_OUT_h"; }}'

[[stage]]
name = "gated"
inputs = ["input"]
outputs = ["n"]
env = {{ OUTSIDE = "{outside}" }}
run = 'while [ ! -e "$OUTSIDE/gate" ]; do sleep 0.05; done; echo opened > "$VOW_OUT_n"'

[[stage]]
name = "greedy"
inputs = ["input"]
outputs = ["n"]
memory = "64M"
run = 'python3 -c "b = bytearray(512 * 1024 * 1024)" && echo fit > "$VOW_OUT_n"'

[[stage]]
name = "modest"
inputs = ["input"]
outputs = ["n"]
memory = "64M"
run = 'python3 -c "b = bytearray(8 * 1024 * 1024)" && echo fit > "$VOW_OUT_n"'

[[stage]]
name = "hog"
inputs = ["input"]
outputs = ["n"]
memory = "64M"
run = 'python3 -c "b = bytes(range(256)) * (800 * 1024)" && echo fit > "$VOW_OUT_n"'

[[stage]]
name = "forks"
inputs = ["input"]
outputs = ["n"]
pids = 16
run = 'i=0; while [ $i -lt 40 ]; do sleep 3 & i=$((i+1)); done; wait; echo forked > "$VOW_OUT_n"'

[[stage]]
name = "held"
inputs = ["input"]
outputs = ["n"]
memory = "64M"
env = {{ OUTSIDE = "{outside}" }}
run = 'while [ ! -e "$OUTSIDE/held" ]; do sleep 0.05; done; echo opened > "$VOW_OUT_n"'

[[stage]]
name = "heldhog"
inputs = ["input"]
outputs = ["n"]
memory = "64M"
env = {{ OUTSIDE = "{outside}" }}
run = 'while [ ! -e "$OUTSIDE/heldhog" ]; do sleep 0.05; done; python3 -c "b = bytes(range(256)) * (800 * 1024)"'
"""


def bwrap_works():
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return "bwrap is not installed (Debian package bubblewrap)"
    p = subprocess.run([bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                        "--tmpfs", "/tmp", "--unshare-pid", "--unshare-net", "--die-with-parent",
                        "true"], capture_output=True, text=True)
    return None if p.returncode == 0 else f"bwrap does not run here: {p.stderr.strip()}"


class Listener:
    """A TCP port on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def make_mesh(sandbox, extra=()):
    """One agent running every stage (and the `extra` ones); `outside` is a directory
    outside /tmp (so not under the sandbox's private /tmp), `secret` a file beside the
    state directory."""
    listener = Listener()
    outside = tempfile.mkdtemp(prefix="vow-sbx-outside-", dir="/var/tmp")
    scratch = tempfile.mkdtemp(prefix="vow-sbx-file-")
    path = os.path.join(scratch, "sbx.toml")
    mesh = Mesh(VOW, VOWD, [], prefix="vow-sbx-")
    state = os.path.join(mesh.root, "state-a")
    secret = os.path.join(mesh.root, "secret")
    with open(secret, "w") as f:
        f.write("not for jobs\n")
    with open(path, "w") as f:
        f.write(PIPELINE.format(state=state, outside=outside, port=listener.port,
                                secret=secret, probe=PROBE))
    shutil.copy(path, mesh.root)
    shutil.rmtree(scratch)
    mesh.pipelines = [os.path.join(mesh.root, "sbx.toml")]
    data = os.path.join(mesh.root, "input.txt")
    with open(data, "w") as f:
        f.write("alpha\n")
    stages = [(f"sbx/{s}", 2) for s in ("probe", "online", "linked", "gated", "greedy", "modest",
                                        *extra)]
    a = mesh.add("a", stages, sources=[("sbx/input", data, False)])
    check(a.state == state, f"state directory {a.state}, expected {state}")
    a.agent_lines = [f'sandbox = "{sandbox}"']
    return mesh, a, listener, outside, data


def report(agent, stage):
    out = os.path.join(agent.mesh.root, f"report-{stage}")
    agent.vow("get", f"sbx/{stage}.report", "-o", out)
    with open(out) as f:
        return dict(line.split("=", 1) for line in f.read().split())


def job_error(agent, stage):
    jobs = json.loads(agent.vow("jobs", "--stage", stage, "--json").stdout)["jobs"]
    errors = [r.get("error", "") for j in jobs for r in j.get("results", []) if not r["ok"]]
    check(errors, f"stage {stage}: no failed result in {jobs}")
    return errors[0]


def wait_stage(agent, stage):
    return agent.vow("wait", f"sbx/{stage}", "--timeout", "60s", check_rc=False, timeout=90)


def scenario_sandboxed():
    mesh, a, listener, outside, data = make_mesh("bwrap")
    try:
        mesh.start()
        for stage in ("probe", "online", "modest"):
            p = wait_stage(a, stage)
            check(p.returncode == DONE, f"stage {stage}: rc {p.returncode}: {p.stderr}\n"
                                        f"{a.tail()}")
        seen = report(a, "probe")
        check(seen == {"identity": "hidden", "state": "hidden", "outside": "refused",
                       "input": "refused", "network": "refused"},
              f"what a sandboxed job could do: {seen}")
        check(not os.path.exists(os.path.join(outside, "escape")),
              f"a job wrote {outside}/escape")
        check(not os.path.exists(os.path.join(a.state, "planted")),
              "a job wrote into the agent's state directory")
        with open(data) as f:
            check(f.read() == "alpha\n", "a job changed its input's source")
        online = report(a, "online")
        check(online["network"] == "connected" and online["identity"] == "hidden",
              f"a job of a stage with network = true: {online}")
        check(listener.accepted == 1,
              f"connections to the test's port: {listener.accepted}, expected 1 (the online job)")

        p = wait_stage(a, "linked")
        check(p.returncode == FAILED, f"hard-linked output: rc {p.returncode}: {p.stderr}")
        err = job_error(a, "linked")
        check("output 'h' refused" in err and "out/h is a hard link" in err,
              f"the refusal names the output and the reason: {err!r}")
        check(a.status()["outputs_refused_here"] >= 1, "refusals are counted")

        p = wait_stage(a, "greedy")
        check(p.returncode == FAILED, f"job over its memory: rc {p.returncode}: {p.stderr}")
        err = job_error(a, "greedy")
        check("memory limit is 64 MiB" in err, f"the failure names the limit: {err!r}")
    finally:
        mesh.cleanup()
        shutil.rmtree(outside, ignore_errors=True)


def scenario_unsandboxed():
    """sandbox = "none": the probe sees the state directory and the port (the probe can
    tell), a hard link to a file outside the job is refused, naming it, and the agent's
    log says jobs run without a sandbox."""
    mesh, a, listener, outside, data = make_mesh("none")
    try:
        mesh.start()
        p = wait_stage(a, "probe")
        check(p.returncode == DONE, f"probe: rc {p.returncode}: {p.stderr}")
        seen = report(a, "probe")
        check(seen["identity"] == "readable" and seen["state"] == "visible" and
              seen["outside"] == "written" and seen["network"] == "connected",
              f"what an unsandboxed job could do: {seen}")
        check(os.path.exists(os.path.join(a.state, "planted")), "the probe writes the state")
        p = wait_stage(a, "linked")
        check(p.returncode == FAILED, f"hard link to a file outside: rc {p.returncode}")
        err = job_error(a, "linked")
        check("output 'h' refused" in err and "hard link" in err,
              f"the refusal names the output: {err!r}")
        check("without a sandbox" in a.tail(200), f"log: {a.tail()}")
    finally:
        mesh.cleanup()
        shutil.rmtree(outside, ignore_errors=True)


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[:-1]
    except OSError:
        return []


def proc_parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def scenario_restart(sandbox="bwrap"):
    """A sandboxed job outlives its agent (SIGKILL) and is re-adopted by the restarted
    agent, not started again; it finishes once its gate opens. Bare (`restart-bare`), the
    job is its command alone, a child of the agent's job host, which outlives the agent
    with it, writes its status, and exits once it has ended."""
    mesh, a, listener, outside, data = make_mesh(sandbox)
    started = re.compile(r"job (\w+) sbx/gated started \(pid (\d+)\)")
    try:
        mesh.start()
        first = wait_until("the gated job to start",
                           lambda: started.findall(a.tail(500)), 60)
        pid = int(first[0][1])
        host = None
        if sandbox == "none":
            # One process: the command itself (no supervisor shell), its parent the host.
            check(proc_cmdline(pid)[:2] == [b"/bin/sh", b"-c"] and
                  b"vow-job" not in proc_cmdline(pid), f"the job is its command: "
                  f"{proc_cmdline(pid)}")
            host = proc_parent(pid)
            check(proc_cmdline(host)[-1:] == [b"job-host"],
                  f"the job's parent is the job host: {proc_cmdline(host)}")
        a.kill(signal.SIGKILL)
        check(os.path.exists(f"/proc/{pid}"), "the job's supervisor outlives the agent")
        if host is not None:
            check(proc_cmdline(host)[-1:] == [b"job-host"], "the job host outlives the agent")
        a.start()
        wait_until("the job re-adopted", lambda: "re-adopted" in a.tail(500), 60)
        with open(os.path.join(outside, "gate"), "w"):
            pass
        p = wait_stage(a, "gated")
        check(p.returncode == DONE, f"gated: rc {p.returncode}: {p.stderr}\n{a.tail()}")
        out = os.path.join(mesh.root, "gated-n")
        a.vow("get", "sbx/gated.n", "-o", out)
        with open(out) as f:
            check(f.read() == "opened\n", "the re-adopted job's output")
        check(len(started.findall(a.tail(2000))) == 1, f"started once: {a.tail(40)}")
        if host is not None:
            wait_until("the old job host to exit, its job ended",
                       lambda: not proc_cmdline(host), 30)
    finally:
        mesh.cleanup()
        shutil.rmtree(outside, ignore_errors=True)


# Runs vowd as root without capabilities, where bwrap cannot make its namespaces.
NO_CAPS = ("setpriv", "--bounding-set", "-all", "--inh-caps", "-all")


def scenario_fallback():
    """bwrap does not work for this agent (root without capabilities): with sandbox =
    "auto" it starts, says once that jobs run without a sandbox and why, and runs them;
    with sandbox = "bwrap" it refuses to start, saying why."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        print("skipped: needs root and setpriv to take bwrap's capabilities away")
        sys.exit(77)
    mesh, a, listener, outside, data = make_mesh("auto")
    a.prefix = list(NO_CAPS)
    try:
        mesh.start()
        p = wait_stage(a, "probe")
        check(p.returncode == DONE, f"probe: rc {p.returncode}: {p.stderr}\n{a.tail()}")
        check(report(a, "probe")["state"] == "visible", "the job ran unsandboxed")
        warnings = [line for line in a.tail(500).splitlines() if "WITHOUT a sandbox" in line]
        check(len(warnings) == 1 and "Operation not permitted" in warnings[0],
              f"one warning with bwrap's reason: {warnings}")
        mesh.stop()
        a.agent_lines = ['sandbox = "bwrap"']
        a.write_config([])
        p = subprocess.run([*NO_CAPS, VOWD, "--config", a.config], capture_output=True,
                           text=True, timeout=30)
        check(p.returncode != 0, f"vowd started with sandbox = \"bwrap\" and no bwrap: {p.stderr}")
        check('[agent] sandbox = "bwrap", but /usr/bin/bwrap does not work here' in p.stderr and
              "Operation not permitted" in p.stderr, f"the refusal says why: {p.stderr}")
    finally:
        mesh.cleanup()
        shutil.rmtree(outside, ignore_errors=True)


def set_job_limits(agent, how):
    """[agent] job_limits = HOW, in place of what VOW_JOB_LIMITS set."""
    agent.agent_lines = [line for line in agent.agent_lines
                         if not line.startswith("job_limits")] + [f'job_limits = "{how}"']


def cgroups_usable():
    """Why this host gives no cgroup to a job (None if it does): as the agent decides,
    a writable cgroup with the memory controller (docs/sandbox.md, "Limits")."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(","):
                own[c or "v2"] = path
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            kind, opts = fields[dash + 1], fields[dash + 3].split(",")
            if kind == "cgroup2":
                mounts["v2"] = (fields[4], fields[3])
            elif kind == "cgroup":
                for c in opts:
                    mounts[c] = (fields[4], fields[3])
    for key, controllers in (("v2", "cgroup.controllers"), ("memory", None)):
        if key not in mounts or key not in own:
            continue
        point, root = mounts[key]
        path = own[key]
        if root != "/" and not path.startswith(root):
            continue
        d = point + path[len(root):] if root != "/" else point + path.rstrip("/")
        if controllers:
            try:
                with open(os.path.join(d, controllers)) as f:
                    if "memory" not in f.read().split():
                        continue
            except OSError:
                continue
        if os.access(d, os.W_OK):
            return None
    return "no writable cgroup with the memory controller here (not root, or no delegation)"


def jobs_cgroup_dirs(agent):
    """The directories the agent makes its jobs' cgroups in, from its log line."""
    lines = [line for line in agent.tail(2000).splitlines() if "job limits: " in line]
    check(len(lines) == 1, f"one 'job limits' line: {lines}")
    m = re.search(r"job limits: cgroups v[12] \((.*) under (.*)\)", lines[0])
    check(m, f"the job limits are cgroups: {lines[0]}")
    return m.group(2).split(", ")


def cgroups_of(dirs):
    return {os.path.join(d, e) for d in dirs for e in os.listdir(d)
            if os.path.isdir(os.path.join(d, e))}


def scenario_cgroups():
    """Limits through a cgroup per job, on this host's kernel, as root: a job touching
    200 MiB of resident memory with memory = "64M" is killed, and its failure says the
    cgroup's OOM killer did it (RLIMIT_AS is not set); a job past pids = 16 is refused
    even though the agent is root (whom RLIMIT_NPROC does not bind); a job with a limit
    is re-adopted after the agent's SIGKILL with its cgroup; one killed past its memory
    while the agent is down fails naming the limit once the agent is back; and once the
    jobs end no job cgroup is left."""
    mesh, a, listener, outside, data = make_mesh("auto",
                                                 extra=("hog", "forks", "held", "heldhog"))
    set_job_limits(a, "cgroups")
    started = re.compile(r"job (\w+) sbx/held started \(pid (\d+)\)")
    try:
        mesh.start()
        dirs = jobs_cgroup_dirs(a)
        first = wait_until("the held job to start", lambda: started.findall(a.tail(500)), 60)
        job, pid = first[0][0], int(first[0][1])
        mine = [c for c in cgroups_of(dirs) if f".{job}" in os.path.basename(c)]
        check(mine, f"the held job {job} has a cgroup: {cgroups_of(dirs)}")
        def procs(c):
            with open(os.path.join(c, "cgroup.procs")) as f:
                return f.read().split()
        for c in mine:
            # The supervisor joins its cgroup as its first step, a moment after the log
            # says the job started.
            wait_until(f"the job's supervisor {pid} in {c}", lambda: str(pid) in procs(c), 10)

        p = wait_stage(a, "hog")
        check(p.returncode == FAILED, f"job over its memory: rc {p.returncode}: {p.stderr}")
        err = job_error(a, "hog")
        check("memory limit is 64 MiB: the job's cgroup reached it" in err and
              "out of memory" in err, f"the failure names the limit and the cgroup: {err!r}")
        p = wait_stage(a, "modest")
        check(p.returncode == DONE, f"job under its memory: rc {p.returncode}: {p.stderr}")

        p = wait_stage(a, "forks")
        check(p.returncode == FAILED, f"job past its pids, as root: rc {p.returncode}: "
                                      f"{p.stderr}\n{a.tail()}")
        err = job_error(a, "forks")
        check("pids limit is 16: the job's cgroup refused" in err,
              f"the failure names the pids limit: {err!r}")
        check("not enforced here" not in a.tail(2000), "no warning that pids is not enforced")

        hog_started = re.compile(r"job \w+ sbx/heldhog started \(pid (\d+)\)")
        hog_pid = int(wait_until("the heldhog job to start",
                                 lambda: hog_started.findall(a.tail(2000)), 60)[0])
        a.kill(signal.SIGKILL)
        check(os.path.exists(f"/proc/{pid}"), "the held job's supervisor outlives the agent")
        # heldhog goes past its memory while the agent is down.
        with open(os.path.join(outside, "heldhog"), "w"):
            pass
        wait_until("heldhog to end", lambda: not os.path.exists(f"/proc/{hog_pid}"), 60)
        a.start()
        wait_until("the held job re-adopted", lambda: "re-adopted" in a.tail(500), 60)
        check(all(os.path.isdir(c) for c in mine), f"its cgroup is still there: {mine}")
        with open(os.path.join(outside, "held"), "w"):
            pass
        p = wait_stage(a, "held")
        check(p.returncode == DONE, f"held: rc {p.returncode}: {p.stderr}\n{a.tail()}")
        p = wait_stage(a, "heldhog")
        check(p.returncode == FAILED, f"heldhog: rc {p.returncode}: {p.stderr}\n{a.tail()}")
        err = job_error(a, "heldhog")
        check("memory limit is 64 MiB: the job's cgroup reached it" in err,
              f"the failure of a job that ended while the agent was down names the limit: "
              f"{err!r}\n{a.tail()}")
        check(len(hog_started.findall(a.tail(2000))) == 1 and
              "finished while this agent was down" in a.tail(2000),
              f"heldhog was adopted as finished, not run again: {a.tail(40)}")
        # This agent's cgroups are named TAG.<job>.<epoch>: none is left once its jobs end.
        tag = os.path.basename(mine[0]).split(".")[0] + "."
        wait_until("the jobs' cgroups removed",
                   lambda: not [c for c in cgroups_of(dirs)
                                if os.path.basename(c).startswith(tag)], 20)
    finally:
        mesh.cleanup()
        shutil.rmtree(outside, ignore_errors=True)


def scenario_rlimits():
    """job_limits = "rlimits": no cgroup, the log says so, and the limits are the
    rlimits: a job over its memory cannot allocate it, and (as root, whom RLIMIT_NPROC
    does not bind) a job past its pids is not stopped, with a warning at start."""
    mesh, a, listener, outside, data = make_mesh("auto", extra=("forks",))
    set_job_limits(a, "rlimits")
    try:
        mesh.start()
        lines = [line for line in a.tail(2000).splitlines() if "job limits: " in line]
        check(len(lines) == 1 and "job limits: rlimits: cgroups not tried" in lines[0],
              f"the log says the limits are rlimits: {lines}")
        p = wait_stage(a, "greedy")
        check(p.returncode == FAILED, f"job over its memory: rc {p.returncode}: {p.stderr}")
        err = job_error(a, "greedy")
        check("memory limit is 64 MiB: memory past it cannot be allocated" in err,
              f"the failure names the limit as an rlimit: {err!r}")
        p = wait_stage(a, "modest")
        check(p.returncode == DONE, f"job under its memory: rc {p.returncode}: {p.stderr}")
        p = wait_stage(a, "forks")
        if os.geteuid() == 0:
            check(p.returncode == DONE, f"root is not bound by RLIMIT_NPROC: rc {p.returncode}")
            check("its pids limit (16) is not enforced here" in a.tail(2000),
                  f"the warning at start: {a.tail()}")
        else:
            check(p.returncode == FAILED, f"job past its pids: rc {p.returncode}")
            check("pids limit is 16: a process past it cannot be started" in
                  job_error(a, "forks"), "the failure names the pids limit")
    finally:
        mesh.cleanup()
        shutil.rmtree(outside, ignore_errors=True)


if __name__ == "__main__":
    why = bwrap_works()
    if why and sys.argv[3] in ("sandboxed", "restart"):
        print(f"skipped: {why}")
        sys.exit(77)
    if sys.argv[3] == "cgroups":
        why = cgroups_usable()
        if why:
            print(f"skipped: {why}")
            sys.exit(77)
    run_scenario({"sandboxed": scenario_sandboxed, "unsandboxed": scenario_unsandboxed,
                  "fallback": scenario_fallback, "restart": scenario_restart,
                  "restart-bare": lambda: scenario_restart("none"),
                  "cgroups": scenario_cgroups, "rlimits": scenario_rlimits}, sys.argv[3])
