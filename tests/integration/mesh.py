"""A mesh of real vowd processes on loopback, for the integration and chaos tests.

Each agent gets its own state directory, a free port, an agent file written here and
its identity from `vow keys gen`. Queries go through the `vow` command line (status
--json), so the tests exercise what a user runs. Waits are conditions with deadlines,
never fixed sleeps.
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


class TestFailure(Exception):
    pass


def run_scenario(scenarios, name):
    """Runs one named scenario of a test file and exits as meson expects: 0 with "ok NAME",
    1 with "FAIL NAME: why"."""
    try:
        scenarios[name]()
    except TestFailure as e:
        print(f"FAIL {name}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"ok {name}")


def check(cond, message):
    if not cond:
        raise TestFailure(message)


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_taken = set()


def free_port():
    """A loopback port free now and below the kernel's ephemeral range, so that the
    outgoing connections of agents already running (which take ephemeral ports) cannot
    take it before the agent it is meant for binds it."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    """User and system CPU of a process so far, in clock ticks (SC_CLK_TCK)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def proc_cpu_ms(pid):
    """(own, reaped children) CPU of a process so far in ms, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return ((int(fields[11]) + int(fields[12])) * 1000.0 / hz,
            (int(fields[13]) + int(fields[14])) * 1000.0 / hz)


def descendants(pid):
    """The processes under PID (its children, theirs, ...), from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def agent_cpu_ms(pid):
    """(agent, jobs) CPU so far in ms: the agent's own, and its jobs' processes: what it
    has reaped, and what runs under it with what that has reaped (its job hosts, the
    sandbox of one, jobs running now)."""
    own, jobs = proc_cpu_ms(pid)
    for p in descendants(pid):
        try:
            jobs += sum(proc_cpu_ms(p))
        except OSError:
            pass
    return own, jobs


def wait_until(what, fn, timeout=30.0, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise TestFailure(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Agent:
    def __init__(self, mesh, name, promises, sources=(), trusted=True, timing=None,
                 endpoint=None, prefix=()):
        self.mesh = mesh
        self.name = name
        self.promises = promises  # [("pipeline/stage", capacity)]
        self.sources = sources    # [("pipeline/source", path, watch)]
        # endpoint: where it listens (default a free loopback port); prefix: the command
        # vowd runs under, e.g. ("ip", "netns", "exec", NS) for an agent in a namespace.
        self.port = None if endpoint else free_port()
        self.endpoint = endpoint or f"tcp://127.0.0.1:{self.port}"
        self.prefix = list(prefix)
        self.state = os.path.join(mesh.root, "state-" + name)
        self.config = os.path.join(mesh.root, f"agent-{name}.toml")
        self.log_path = os.path.join(mesh.root, name + ".log")
        self.trusted = trusted
        self.timing = timing or {}
        self.http_port = None        # set: [agent] http on 127.0.0.1:PORT
        self.trust_clients = []      # [trust] clients (read-only query keys)
        self.proc = None
        self.pipelines = None        # pipeline files of this agent (default: the mesh's)
        # More lines for [agent]. VOW_SANDBOX=none|bwrap|auto sets every agent's sandbox
        # (docs/sandbox.md), e.g. to measure its cost (bench/run).
        sandbox = os.environ.get("VOW_SANDBOX")
        self.agent_lines = [f'sandbox = "{sandbox}"'] if sandbox else []
        # VOW_JOB_LIMITS=auto|cgroups|rlimits sets how every agent applies a stage's
        # limits (docs/sandbox.md, "Limits"), e.g. to run the tests on the rlimit path.
        job_limits = os.environ.get("VOW_JOB_LIMITS")
        if job_limits:
            self.agent_lines.append(f'job_limits = "{job_limits}"')
        # VOW_BULK=encrypted|integrity sets how every agent sends artifacts
        # (docs/protocol.md, "Bulk without encryption"), e.g. for bench/run.
        bulk = os.environ.get("VOW_BULK")
        if bulk:
            self.agent_lines.append(f'bulk_transfer = "{bulk}"')
        self.extra_lines = []  # more tables, e.g. [slurm]
        out = subprocess.run([mesh.vow, "keys", "gen", "--state-dir", self.state],
                             check=True, capture_output=True, text=True)
        self.id = out.stdout.strip()

    def write_config(self, peers):
        lines = ["[agent]", f'name = "{self.name}"', f'listen = "{self.endpoint}"',
                 "peers = [" + ", ".join(f'"{p}"' for p in peers) + "]",
                 f'state_dir = "{self.state}"',
                 "pipelines = [" + ", ".join(f'"{p}"' for p in
                                             (self.pipelines or self.mesh.pipelines)) + "]"]
        if self.http_port:
            lines.append(f'http = "127.0.0.1:{self.http_port}"')
        lines += self.agent_lines
        lines += ["", "[trust]", 'key_files = ["keys/*.pub"]']
        if self.trust_clients:
            lines.append("clients = [" + ", ".join(f'"{c}"' for c in self.trust_clients) + "]")
        lines.append("")
        for stage, cap, *executor in self.promises:  # (stage, capacity[, executor])
            lines += ["[[promise]]", f'stage = "{stage}"', f"capacity = {cap}"]
            lines += [f'executor = "{e}"' for e in executor] + [""]
        for dataset, path, watch in self.sources:
            lines += ["[[source]]", f'dataset = "{dataset}"', f'path = "{path}"',
                      f"watch = {'true' if watch else 'false'}", ""]
        lines += self.extra_lines
        if self.timing:
            lines.append("[timing]")
            lines += [f'{k} = "{v}"' for k, v in self.timing.items()]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        with open(self.log_path, "a") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([*self.prefix, self.mesh.vowd, "--config", self.config,
                                          "--log-level", os.environ.get("VOW_LOG_LEVEL", "info")],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_until(f"{self.name} control socket",
                   lambda: self.proc.poll() is not None or
                   os.path.exists(os.path.join(self.state, "control.sock")), 20)
        check(self.proc.poll() is None, f"{self.name} exited at start: {self.tail()}")

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        if sig == signal.SIGKILL:
            # vowd is gone; its socket file stays until the next start replaces it.
            try:
                os.unlink(os.path.join(self.state, "control.sock"))
            except FileNotFoundError:
                pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def vow(self, *args, check_rc=True, timeout=60):
        p = subprocess.run([self.mesh.vow, *args, "--state-dir", self.state],
                           capture_output=True, text=True, timeout=timeout)
        if check_rc and p.returncode != 0:
            raise TestFailure(f"vow {' '.join(args)} on {self.name}: rc {p.returncode}: "
                              f"{p.stderr.strip()}")
        return p

    def status(self):
        return json.loads(self.vow("status", "--json").stdout)

    def tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:  # peers' names may be bytes
                return "".join(f.readlines()[-n:])
        except FileNotFoundError:
            return ""


class Mesh:
    def __init__(self, vow, vowd, pipelines, named_seeds=True, prefix="vow-mesh-"):
        # named_seeds: seed peers written ID@ENDPOINT; else bare endpoints, whose keys
        # the agents find by probing. prefix: of the temporary directory holding it all.
        self.named_seeds = named_seeds
        self.vow = vow
        self.vowd = vowd
        self.root = tempfile.mkdtemp(prefix=prefix)
        os.makedirs(os.path.join(self.root, "keys"))
        self.pipelines = []
        for p in pipelines:
            dst = os.path.join(self.root, os.path.basename(p))
            shutil.copy(p, dst)
            self.pipelines.append(dst)
        self.agents = []

    def add(self, name, promises, sources=(), trusted=True, timing=None, endpoint=None,
            prefix=()):
        a = Agent(self, name, promises, sources, trusted, timing, endpoint, prefix)
        if trusted:
            with open(os.path.join(self.root, "keys", name + ".pub"), "w") as f:
                f.write(a.id + "\n")
        self.agents.append(a)
        return a

    def start(self):
        for a in self.agents:
            others = [f"{b.id}@{b.endpoint}" if self.named_seeds else b.endpoint
                      for b in self.agents if b is not a]
            a.write_config(others)
        for a in self.agents:
            a.start()

    def stop(self):
        for a in self.agents:
            a.kill(signal.SIGTERM if a.alive() else signal.SIGKILL)

    def cleanup(self, keep=False):
        # Called from a test's `finally`: when the test is failing, each agent's last log
        # lines go to stderr (the test log keeps them) before the mesh is removed, so
        # that a failure seen once can be read.
        kind, exc = sys.exc_info()[:2]
        if kind is not None and not (kind is SystemExit and exc.code in (0, None, 77)):
            for ag in self.agents:
                print(f"--- {ag.name}: the last lines of {ag.log_path} ---\n{ag.tail(150)}",
                      file=sys.stderr)
        self.stop()
        if not keep and not os.environ.get("VOW_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)


def stage_counts(status, pipeline):
    for p in status["pipelines"]:
        if p["name"] == pipeline:
            return {s["name"]: s["jobs"] for s in p["stages"]}
    return {}


def canonical_output(status, pipeline, stage, output):
    for p in status["pipelines"]:
        if p["name"] != pipeline:
            continue
        for s in p["stages"]:
            if s["name"] == stage and s.get("results"):
                return s["results"][0]["outputs"].get(output)
    return None


def read_artifact(mesh, digest):
    """The bytes of a file artifact, from whichever agent's store holds it."""
    for a in mesh.agents:
        path = os.path.join(a.state, "artifacts", "objects", digest[:2], digest)
        if os.path.exists(path):
            with open(path, "rb") as f:
                return f.read()
    raise TestFailure(f"artifact {digest} is held by no agent")
