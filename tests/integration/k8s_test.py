#!/usr/bin/python3
"""The Kubernetes example (examples/kubernetes) as its pods would run it, without a
cluster: the agent files of the ConfigMap pass `vow check`; then one network namespace
per pod (its own address, every agent on port 7400 as in a pod), the stable names
vow-N.vow resolved through a hosts file (what the headless Service's DNS does),
identities made by `vow keys gen --out` and installed as the init container does, and
vowd started with the StatefulSet's own arguments. The agents must find each other by
name, tell each other their advertised names, run the wordcount pipeline, answer
/healthz and /readyz, and log JSON lines.

Exits 77 (skipped) where network namespaces cannot be made (not root).

usage: k8s_test.py VOW VOWD SOURCE_ROOT
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import TestFailure, check, wait_until  # noqa: E402

VOW, VOWD, ROOT = (os.path.abspath(a) for a in sys.argv[1:4])
EXAMPLE = os.path.join(ROOT, "examples", "kubernetes")
PODS = ["vow-0", "vow-1", "vow-2"]
SKIP = 77


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, **kw)


class Pods:
    """A hub namespace with a bridge, and one namespace per pod joined to it by a veth
    pair (10.78.0.N/24); /etc/netns/NS/hosts, which `ip netns exec` mounts over
    /etc/hosts, resolves every pod's stable name."""

    def __init__(self):
        tag = f"vowk8s{os.getpid()}"
        self.hub = f"{tag}-hub"
        self.names = {pod: f"{tag}-{i}" for i, pod in enumerate(PODS)}
        self.made = []

    @staticmethod
    def ip(*args):
        p = run("ip", *args)
        if p.returncode != 0:
            raise OSError(f"ip {' '.join(args)}: {p.stderr.strip()}")

    @staticmethod
    def address(i):
        return f"10.78.0.{i + 10}"

    def setup(self):
        self.ip("netns", "add", self.hub)
        self.made.append(self.hub)
        self.ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        self.ip("-n", self.hub, "link", "set", "br0", "up")
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{self.address(i)} {pod}.vow.default.svc.cluster.local {pod}.vow {pod}\n"
            for i, pod in enumerate(PODS))
        for i, pod in enumerate(PODS):
            ns = self.names[pod]
            self.ip("netns", "add", ns)
            self.made.append(ns)
            self.ip("-n", ns, "link", "set", "lo", "up")
            self.ip("-n", self.hub, "link", "add", f"vh{i}", "type", "veth", "peer", "name",
                    "eth0", "netns", ns)
            self.ip("-n", self.hub, "link", "set", f"vh{i}", "master", "br0", "up")
            self.ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            self.ip("-n", ns, "link", "set", "eth0", "up")
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w") as f:
                f.write(hosts)

    def exec_prefix(self, pod):
        return ["ip", "netns", "exec", self.names[pod]]

    def cleanup(self):
        for ns in reversed(self.made):
            run("ip", "netns", "del", ns)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        self.made = []


def container(statefulset, name):
    spec = statefulset["spec"]["template"]["spec"]
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] == name:
            return c
    raise TestFailure(f"statefulset.yaml has no container {name}")


def main():
    with open(os.path.join(EXAMPLE, "statefulset.yaml")) as f:
        sts = yaml.safe_load(f)
    with open(os.path.join(EXAMPLE, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    agents_dir = os.path.join(EXAMPLE, "agents")

    # The agent files of the ConfigMap are valid, each as its pod loads it.
    files = [os.path.join(agents_dir, f"{pod}.toml") for pod in PODS]
    p = run(VOW, "check", *files)
    check(p.returncode == 0 and "ok: 1 pipeline, 3 agents" in p.stdout,
          f"vow check of the example's agent files: rc {p.returncode}: {p.stdout}{p.stderr}")
    generated = {g["name"]: g["files"] for g in kustomization["configMapGenerator"]}
    check(sorted(generated["vow-agents"]) == [f"agents/{pod}.toml" for pod in PODS],
          f"vow-agents ConfigMap: {generated['vow-agents']}")
    with open(os.path.join(EXAMPLE, "pipelines", "wordcount.toml")) as a, \
            open(os.path.join(ROOT, "examples", "wordcount", "wordcount.toml")) as b:
        check(a.read() == b.read(), "examples/kubernetes/pipelines/wordcount.toml differs "
                                    "from examples/wordcount/wordcount.toml")

    pods = Pods()
    try:
        pods.setup()
    except (OSError, FileNotFoundError) as e:
        pods.cleanup()
        print(f"SKIP: cannot make network namespaces here (they need root): {e}")
        sys.exit(SKIP)
    root = tempfile.mkdtemp(prefix="vow-k8s-")
    procs = {}
    try:
        # The pods' view: /etc/vow/{agents,pipelines,trusted,identities} and
        # /var/lib/vow, here under ROOT; the data volume /srv/vow holds the corpus.
        etc = os.path.join(root, "etc", "vow")
        for d in ("agents", "pipelines", "trusted", "identities"):
            os.makedirs(os.path.join(etc, d))
        srv = os.path.join(root, "srv", "vow")
        corpus = os.path.join(srv, "corpus")
        os.makedirs(corpus)
        words = ["promise", "agent", "mesh", "ledger", "stage", "artifact"]
        for n in range(4):
            with open(os.path.join(corpus, f"text{n}.txt"), "w") as f:
                for k in range(200):
                    f.write(f"{words[(n + k) % 6]} {words[(n * k) % 6]} vow\n")
        shutil.copy(os.path.join(EXAMPLE, "pipelines", "wordcount.toml"),
                    os.path.join(etc, "pipelines"))
        for pod in PODS:
            with open(os.path.join(agents_dir, f"{pod}.toml")) as f:
                text = f.read().replace("/srv/vow", srv)
            with open(os.path.join(etc, "agents", f"{pod}.toml"), "w") as f:
                f.write(text)
            # ./gen-keys: an identity per pod (the Secret), its id in the trust list.
            key = os.path.join(etc, "identities", pod)
            out = run(VOW, "keys", "gen", "--out", key)
            check(out.returncode == 0, f"keys gen: {out.stderr}")
            with open(os.path.join(etc, "trusted", f"{pod}.pub"), "w") as f:
                f.write(out.stdout.strip() + "\n")
        ids = {}
        for pod in PODS:
            with open(os.path.join(etc, "trusted", f"{pod}.pub")) as f:
                ids[pod] = f.read().strip()

        def in_pod(argv, pod):
            return [a.replace("$(POD_NAME)", pod).replace("/etc/vow", etc)
                    .replace("/var/lib/vow", os.path.join(root, "state", pod)) for a in argv]

        init = container(sts, "identity")
        main_c = container(sts, "vowd")
        for pod in PODS:
            os.makedirs(os.path.join(root, "state", pod))
            p = run(*in_pod(init["command"], pod))
            check(p.returncode == 0, f"init container of {pod}: {p.stderr}")
            log = open(os.path.join(root, f"{pod}.log"), "w")
            procs[pod] = subprocess.Popen(
                pods.exec_prefix(pod) + [VOWD] + in_pod(main_c["args"], pod),
                stdout=log, stderr=subprocess.STDOUT)

        def vow(pod, *args, timeout=60):
            return run(VOW, *args, "--state-dir", os.path.join(root, "state", pod),
                       timeout=timeout)

        def peers(pod):
            p = vow(pod, "peers", "--json")
            return json.loads(p.stdout) if p.returncode == 0 else None

        def meshed():
            for pod in PODS:
                ps = peers(pod)
                if not ps or sorted(x["name"] for x in ps["peers"] if x["alive"]) != \
                        sorted(set(PODS) - {pod}):
                    return False
            return True

        wait_until("the pods to find each other by name", meshed, 60, 0.2)
        for pod in PODS:
            ps = peers(pod)
            check(ps["self"]["id"] == ids[pod], f"{pod} runs with another identity: {ps['self']}")
            for x in ps["peers"]:
                check(x["endpoint"] == f"tcp://{x['name']}.vow:7400",
                      f"{pod} was told {x['name']} is at {x['endpoint']}")
        p = vow("vow-0", "wait", "wordcount", "--timeout", "120s", timeout=150)
        check(p.returncode == 0, f"vow wait wordcount on vow-0: rc {p.returncode}: {p.stderr}")
        p = vow("vow-2", "get", "wordcount/top.report", "-o", "-")
        check(p.returncode == 0 and re.match(r"^\s*\d+ vow\n", p.stdout),
              f"the report: rc {p.returncode}: {p.stdout[:200]} {p.stderr}")

        # The probes the StatefulSet declares, asked inside the pod.
        probes = {name: main_c[name]["httpGet"]["path"]
                  for name in ("livenessProbe", "readinessProbe", "startupProbe")}
        check(probes["readinessProbe"] == "/readyz" and probes["livenessProbe"] == "/healthz",
              f"probes: {probes}")
        fetch = ("import sys, urllib.request\n"
                 "r = urllib.request.urlopen('http://127.0.0.1:9464' + sys.argv[1], timeout=5)\n"
                 "print(r.status, r.read().decode().strip())\n")
        # As the kubelet does, probe until it answers (the agent refreshes what its
        # probes say every half second, so right after start /readyz may lag).
        for path in sorted(set(probes.values())):
            def probe():
                p = run(*pods.exec_prefix("vow-0"), sys.executable, "-c", fetch, path)
                return p if p.returncode == 0 and p.stdout.startswith("200 ") else None
            wait_until(f"GET {path} in vow-0 to answer 200", probe, 10, 0.2)
    finally:
        for pod, proc in procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        pods.cleanup()
    # Logged as JSON, one object per line; stopped cleanly on SIGTERM.
    try:
        for pod in PODS:
            check(procs[pod].returncode == 0, f"{pod} exited {procs[pod].returncode}")
            with open(os.path.join(root, f"{pod}.log")) as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
            check(lines, f"{pod} logged nothing")
            for ln in lines:
                try:
                    entry = json.loads(ln)
                except ValueError:
                    raise TestFailure(f"{pod} log line is not JSON: {ln!r}")
                check({"time", "level", "msg"} <= set(entry), f"{pod} log entry: {entry}")
            check(any("advertised as tcp://" + pod + ".vow:7400" in json.loads(ln)["msg"]
                      for ln in lines), f"{pod} never said what it advertises")
    finally:
        if not os.environ.get("VOW_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    print("k8s: the example's pods formed a mesh by name and ran wordcount")


if __name__ == "__main__":
    try:
        main()
    except TestFailure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
