#!/usr/bin/python3
"""The Slurm executor (docs/executors.md) on a real single-node Slurm started here
(slurmctld, slurmd and munged of Debian's slurm-wlm and munge, on free ports, as root):
a pipeline runs through two agents, its second stage submitted to Slurm by agent b
(executor = "slurm"); b is killed while that Slurm job runs and, restarted, re-adopts it
(one submission, its output imported); a job b is running in Slurm is fenced (its
promise withdrawn) and is cancelled in Slurm.

usage: slurm_test.py VOW VOWD
Exit 77 (skipped), with the reason, where Slurm cannot start: not root, slurm-wlm or
munge not installed, or the daemons do not come up. Takes about 30 seconds.
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import Mesh, check, free_port, run_scenario, wait_until  # noqa: E402

VOW, VOWD = sys.argv[1:3]
DONE = 0

PIPELINE = """[pipeline]
name = "hpc"

[[source]]
name = "input"

[[stage]]
name = "prep"
inputs = ["input"]
outputs = ["up"]
run = 'tr a-z A-Z < "$VOW_IN_input" > "$VOW_OUT_up"'

[[stage]]
name = "crunch"
inputs = ["prep.up"]
outputs = ["n"]
memory = "256M"
cpus = 1
timeout = "2m"
env = {{ GATE = "{gate}" }}
run = 'while [ ! -e "$GATE" ]; do sleep 0.1; done; wc -c < "$VOW_IN_up" > "$VOW_OUT_n"; echo crunched'

[[stage]]
name = "endless"
inputs = ["input"]
outputs = ["n"]
run = 'sleep 600; echo never > "$VOW_OUT_n"'
"""


def skip(why):
    print(f"skipped: {why}")
    sys.exit(77)


class Slurm:
    """A single-node Slurm cluster (NodeName=localhost) and its munged, in `root`."""

    def __init__(self, root):
        self.root = root
        self.procs = []
        self.conf = os.path.join(root, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def start(self):
        if os.geteuid() != 0:
            skip("slurmd runs jobs as their users and needs root")
        tools = {t: shutil.which(t) or (os.path.exists(f"/usr/sbin/{t}") and f"/usr/sbin/{t}")
                 for t in ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "squeue")}
        missing = [t for t, path in tools.items() if not path]
        if missing:
            skip(f"not installed: {', '.join(missing)} (Debian packages slurm-wlm and munge)")
        r = self.root
        for d in ("state", "spool", "run"):
            os.makedirs(os.path.join(r, d))
        key = os.path.join(r, "munge.key")
        subprocess.run([tools["mungekey"], "-c", "-k", key], check=True, capture_output=True)
        os.chmod(key, 0o600)
        sock = os.path.join(r, "munge.sock")
        self.spawn([tools["munged"], "-F", f"--key-file={key}", f"--socket={sock}",
                    f"--pid-file={r}/munged.pid", f"--log-file={r}/munged.log",
                    f"--seed-file={r}/munged.seed", "--force"], "munged")
        wait_until("munged's socket", lambda: os.path.exists(sock), 10)
        # The node as slurmd finds it, so that it is not drained for a mismatch.
        found = subprocess.run([tools["slurmd"], "-C"], capture_output=True, text=True).stdout
        cpus = re.search(r"CPUs=(\d+)", found)
        memory = re.search(r"RealMemory=(\d+)", found)
        if not cpus or not memory:
            skip(f"slurmd -C says nothing usable: {found!r}")
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=vowtest
SlurmctldHost=localhost
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CryptoType=crypto/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
MinJobAge=600
KillWait=2
NodeName=localhost CPUs={cpus.group(1)} RealMemory={memory.group(1)} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        self.spawn([tools["slurmctld"], "-D", "-f", self.conf], "slurmctld")
        self.spawn([tools["slurmd"], "-D", "-f", self.conf, "-N", "localhost"], "slurmd")
        deadline = time.time() + 30
        state = ""
        while time.time() < deadline:
            p = self.run("sinfo", "--noheader", "--format=%T", check=False)
            state = p.stdout.strip()
            if p.returncode == 0 and state == "idle":
                return
            if any(proc.poll() is not None for proc in self.procs):
                break
            time.sleep(0.3)
        skip(f"Slurm did not come up (node state {state!r}): {self.logs()}")

    def spawn(self, argv, name):
        log = open(os.path.join(self.root, name + ".out"), "w")
        self.procs.append(subprocess.Popen(argv, env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT))

    def run(self, *argv, check=True):
        p = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {p.stderr}")
        return p

    def queue(self):
        """{job id: state} of the jobs Slurm still lists."""
        out = self.run("squeue", "--noheader", "--format=%i %T").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def job_state(self, job_id):
        out = self.run("scontrol", "show", "job", job_id, check=False).stdout
        m = re.search(r"JobState=(\w+)", out)
        return m.group(1) if m else None

    def logs(self):
        out = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munged.out"):
            try:
                with open(os.path.join(self.root, name), errors="replace") as f:
                    out.append(f"{name}: " + "".join(f.readlines()[-5:]))
            except FileNotFoundError:
                pass
        return "\n".join(out)

    def stop(self):
        if os.path.exists(self.conf):
            self.run("scancel", "--me", check=False)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def slurm_job_of(shared, marker):
    """(work directory, Slurm job id) of the run whose batch script contains `marker`."""
    for script in glob.glob(os.path.join(shared, "jobs", "*", "job.sh")):
        with open(script) as f:
            if marker not in f.read():
                continue
        work = os.path.dirname(script)
        try:
            with open(os.path.join(work, "slurm-job")) as f:
                job_id = f.read().strip().split(";")[0]
        except FileNotFoundError:
            job_id = ""
        return work, job_id
    return None, ""


def scenario_slurm():
    root = tempfile.mkdtemp(prefix="vow-slurm-", dir="/var/tmp")
    slurm = Slurm(os.path.join(root, "slurm"))
    os.makedirs(slurm.root)
    shared = os.path.join(root, "shared")
    gate = os.path.join(root, "gate")
    mesh = None
    try:
        slurm.start()
        # The agents find the cluster as its users do: SLURM_CONF in their environment.
        os.environ["SLURM_CONF"] = slurm.conf
        pipeline = os.path.join(root, "hpc.toml")
        with open(pipeline, "w") as f:
            f.write(PIPELINE.format(gate=gate))
        mesh = Mesh(VOW, VOWD, [pipeline], prefix="vow-slurm-mesh-")
        data = os.path.join(root, "input.txt")
        with open(data, "w") as f:
            f.write("alpha\n")
        a = mesh.add("a", [("hpc/prep", 2)], sources=[("hpc/input", data, False)])
        b = mesh.add("b", [("hpc/crunch", 2, "slurm"), ("hpc/endless", 1, "slurm")])
        b.extra_lines = ["[slurm]", f'shared_dir = "{shared}"', 'poll_interval = "200ms"', ""]
        mesh.start()

        # Both Slurm jobs run: crunch waits for its gate, endless sleeps.
        def running():
            q = slurm.queue()
            crunch = slurm_job_of(shared, "crunched")[1]
            endless = slurm_job_of(shared, "sleep 600")[1]
            ok = q.get(crunch) == "RUNNING" and q.get(endless) == "RUNNING"
            return (crunch, endless) if ok else None
        crunch_id, endless_id = wait_until("both Slurm jobs running", running, 60)
        work, _ = slurm_job_of(shared, "crunched")
        with open(os.path.join(work, "job.sh")) as f:
            check("vow-job" in f.read(), "the batch script runs the job's supervisor")

        # The agent dies; the Slurm job does not, and the restarted agent takes it over.
        b.kill(signal.SIGKILL)
        check(slurm.queue().get(crunch_id) == "RUNNING",
              f"the Slurm job outlives its agent: {slurm.queue()}")
        b.start()
        wait_until("the Slurm job re-adopted",
                   lambda: len(re.findall(r"still running .*re-adopted", b.tail(500))) >= 2, 60)
        open(gate, "w").close()
        p = a.vow("wait", "hpc/crunch", "--timeout", "60s", check_rc=False, timeout=90)
        check(p.returncode == DONE, f"crunch: rc {p.returncode}: {p.stderr}\n{b.tail(40)}")
        out = os.path.join(root, "n")
        a.vow("get", "hpc/crunch.n", "-o", out)
        with open(out) as f:
            check(f.read().strip() == "6", "crunch's output: the bytes of ALPHA\\n")
        check(len(re.findall(r"hpc/crunch started", b.tail(2000))) == 1,
              f"crunch submitted once: {b.tail(40)}")
        check(slurm.job_state(crunch_id) == "COMPLETED",
              f"Slurm job {crunch_id}: {slurm.job_state(crunch_id)}")
        check(len(glob.glob(os.path.join(shared, "jobs", "*", "job.sh"))) == 1,
              "crunch's work directory removed once done, endless's kept while it runs")

        # Fenced: b withdraws its promise of endless; the run stops, and so does its
        # Slurm job.
        b.promises = [("hpc/crunch", 2, "slurm")]
        b.write_config([f"{a.id}@{a.endpoint}"])
        b.proc.send_signal(signal.SIGHUP)
        wait_until("the fenced Slurm job gone from the queue",
                   lambda: endless_id not in slurm.queue(), 30)
        check(slurm.job_state(endless_id) == "CANCELLED",
              f"Slurm job {endless_id}: {slurm.job_state(endless_id)}")
        wait_until("the fenced run gone", lambda: "promise withdrawn" in b.tail(200) and
                   not glob.glob(os.path.join(shared, "jobs", "*")), 30)
    finally:
        if mesh:
            mesh.cleanup()
        slurm.stop()
        if not os.environ.get("VOW_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run_scenario({"slurm": scenario_slurm}, "slurm")
