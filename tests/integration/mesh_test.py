#!/usr/bin/python3
"""Integration tests with real vowd processes on loopback (docs/coordination.md).

usage: mesh_test.py VOW VOWD SOURCE_ROOT SCENARIO
Scenarios: wordcount, failover, sigterm, memo-shard, untrusted, bad-config.
"""
import collections
import contextlib
import grp
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import (Mesh, TestFailure, canonical_output, check, free_port,  # noqa: E402
                  read_artifact, run_scenario, stage_counts, wait_until)

VOW, VOWD, ROOT = sys.argv[1:4]
HERE = os.path.dirname(os.path.abspath(__file__))
WORDCOUNT = os.path.join(ROOT, "examples", "wordcount", "wordcount.toml")


def make_corpus(dest):
    """Regular-file copies of the licence texts every Debian machine has."""
    os.makedirs(dest)
    src = "/usr/share/common-licenses"
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if os.path.isfile(path):
            shutil.copy(path, os.path.join(dest, name))  # follows symbolic links


def word_totals(directory):
    counts = collections.Counter()
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            for w in re.findall(rb"[A-Za-z]+", f.read()):
                counts[w.lower().decode()] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return "".join(f"{n} {w}\n" for w, n in ranked)


def wait_done(agent, pipeline, timeout=os.environ.get("VOW_WAIT", "120s")):
    p = agent.vow("wait", pipeline, "--timeout", timeout, check_rc=False, timeout=200)
    check(p.returncode == 0, f"vow wait {pipeline} on {agent.name}: rc {p.returncode}: "
          f"{p.stderr.strip()}\n{agent.tail()}")


def done_jobs(status):
    """(stage, job id) of every job with a canonical result in the latest plan."""
    out = set()
    for p in status["pipelines"]:
        for s in p["stages"]:
            for r in s.get("results", []):
                out.add((s["name"], r["job"]))
    return out


def started_total(mesh):
    return sum(a.status()["jobs_started_here"] for a in mesh.agents if a.alive())


def check_verify_finds_tampering(mesh):
    """vow verify fails, naming the statement, on one changed byte of a stored statement
    and on a result whose input no longer has its source version; then the ledgers are
    put back as they were."""
    a = mesh.agents[0]
    db = os.path.join(a.state, "vow.db")
    saved = db + ".saved"
    shutil.copy(db, saved)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        author, seq, data = con.execute(
            "SELECT author, seq, bytes FROM statements WHERE kind = 5 LIMIT 1").fetchone()
        data = bytearray(data)
        data[len(data) // 2] ^= 0x01
        con.execute("UPDATE statements SET bytes = ? WHERE author = ? AND seq = ?",
                    (bytes(data), author, seq))
    p = subprocess.run([VOW, "verify", "--state-dir", a.state], capture_output=True, text=True)
    check(p.returncode == 1, f"verify after a changed byte: rc {p.returncode}")
    check(re.search(rf"statement vow\w+/{seq}\b", p.stdout), f"verify names no statement: {p.stdout}")
    shutil.copy(saved, db)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("DELETE FROM statements WHERE kind = 2")
    p = subprocess.run([VOW, "verify", "--state-dir", a.state], capture_output=True, text=True)
    check(p.returncode == 1 and "is no source version or output of a result that counts" in p.stdout,
          f"verify after a lost source version: rc {p.returncode}: {p.stdout}")
    shutil.copy(saved, db)
    os.unlink(saved)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)


def scenario_wordcount():
    # Bare seed endpoints, as in examples/wordcount: the agents find each other's keys.
    mesh = Mesh(VOW, VOWD, [WORDCOUNT], named_seeds=False)
    try:
        corpus = os.path.join(mesh.root, "corpus")
        make_corpus(corpus)
        a = mesh.add("a", [("wordcount/split", 1), ("wordcount/count", 2), ("wordcount/top", 1)],
                     sources=[("wordcount/corpus", corpus, False)])
        b = mesh.add("b", [("wordcount/split", 1), ("wordcount/count", 2),
                           ("wordcount/merge", 1)])
        c = mesh.add("c", [("wordcount/count", 2), ("wordcount/merge", 1), ("wordcount/top", 1)])
        mesh.start()
        wait_done(c, "wordcount")
        expected = word_totals(corpus)
        top = canonical_output(c.status(), "wordcount", "top", "report")
        check(top, "no canonical report")
        report = read_artifact(mesh, top).decode()
        check(report == "".join(expected.splitlines(True)[:20]),
              f"report differs from the shell computation:\n{report}\n---\n{expected[:400]}")
        # The work was spread over more than one agent.
        executors = set()
        for ag in mesh.agents:
            for p in ag.status()["pipelines"]:
                for s in p["stages"]:
                    for r in s.get("results", []):
                        executors.add(r["executor"])
        check(len(executors) >= 2, f"all jobs ran on one agent: {executors}")
        # Every agent reports the same job states.
        states = [stage_counts(ag.status(), "wordcount") for ag in mesh.agents]
        wait_until("agents to agree on job states",
                   lambda: all(stage_counts(ag.status(), "wordcount") == states[0]
                               for ag in mesh.agents), 20)
        # Restart everyone: unchanged sources run nothing again (memoized).
        mesh.stop()
        for ag in mesh.agents:
            for tool in ("fsck", "verify"):
                p = subprocess.run([VOW, tool, "--state-dir", ag.state], capture_output=True,
                                   text=True)
                check(p.returncode == 0, f"{tool} of {ag.name}: {p.stdout}{p.stderr}")
        check_verify_finds_tampering(mesh)
        for ag in mesh.agents:
            ag.start()
        wait_done(a, "wordcount")
        time.sleep(1.0)  # let any (wrong) job start show up; the check below is the test
        check(started_total(mesh) == 0, "a memoized job was run again after a restart")
    finally:
        mesh.cleanup()


def slow_mesh(timing=None):
    mesh = Mesh(VOW, VOWD, [os.path.join(HERE, "slow.toml")])
    data = os.path.join(mesh.root, "data.txt")
    with open(data, "w") as f:
        f.write("precious data\n" * 1000)
    mesh.add("a", [("slow/copy", 1)], sources=[("slow/data", data, False)], timing=timing)
    mesh.add("b", [("slow/copy", 1)], timing=timing)
    mesh.add("c", [("slow/copy", 1)], timing=timing)
    mesh.start()
    return mesh, data


def holders(mesh, path):
    with open(path, "rb") as f:
        digest = hashlib.blake2b(f.read(), digest_size=32).hexdigest()
    return [a for a in mesh.agents
            if os.path.exists(os.path.join(a.state, "artifacts", "objects", digest[:2], digest))]


def victim_after_replication(mesh, data):
    """The agent running the job, once the job's input has a second copy (replicas = 2):
    a source held by one agent alone dies with it, by design."""
    wait_until("the source to be replicated", lambda: len(holders(mesh, data)) >= 2, 30)
    return wait_until("a job to start", lambda: running_agent(mesh), 30)


def running_agent(mesh):
    for ag in mesh.agents:
        if ag.alive() and ag.status()["agents"][0]["running"] > 0:
            return ag
    return None


def check_copy(mesh, survivor, data):
    wait_done(survivor, "slow")
    d = canonical_output(survivor.status(), "slow", "copy", "copy")
    with open(data, "rb") as f:
        check(read_artifact(mesh, d) == f.read(), "copied output differs from its input")


def scenario_failover():
    mesh, data = slow_mesh()
    try:
        victim = victim_after_replication(mesh, data)
        victim.kill(signal.SIGKILL)
        survivor = next(a for a in mesh.agents if a.alive())
        check_copy(mesh, survivor, data)
        executor = canonical_output(survivor.status(), "slow", "copy", "copy")
        check(executor is not None, "no result")
        # The killed agent comes back, catches up, and agrees.
        victim.start()
        want = stage_counts(survivor.status(), "slow")
        wait_until("the restarted agent to catch up",
                   lambda: stage_counts(victim.status(), "slow") == want, 30)
    finally:
        mesh.cleanup()


def scenario_sigterm():
    # Failure detection is made far too slow to explain a hand-over: only the released
    # claim can.
    mesh, data = slow_mesh({"membership": "all-to-all", "heartbeat": "100ms",
                            "suspect_after": "30s", "dead_after": "60s"})
    try:
        victim = victim_after_replication(mesh, data)
        t0 = time.monotonic()
        victim.kill(signal.SIGTERM)
        check(victim.proc.returncode == 0, f"vowd exit status {victim.proc.returncode}")
        survivor = next(a for a in mesh.agents if a.alive())
        check_copy(mesh, survivor, data)
        check(time.monotonic() - t0 < 50, "the job waited for failure detection")
    finally:
        mesh.cleanup()


def scenario_reload():
    """SIGHUP reloads promises: the agent that withdraws the stage it is running hands the
    job over at once (failure detection is far too slow to explain it), the one that adds
    it runs it, nobody restarts; a broken config on SIGHUP changes nothing."""
    mesh, data = slow_mesh({"membership": "all-to-all", "heartbeat": "100ms",
                            "suspect_after": "30s", "dead_after": "60s"})
    try:
        victim = victim_after_replication(mesh, data)
        peers = {ag.name: [f"{b.id}@{b.endpoint}" for b in mesh.agents if b is not ag]
                 for ag in mesh.agents}
        t0 = time.monotonic()
        victim.promises = []
        victim.write_config(peers[victim.name])
        victim.proc.send_signal(signal.SIGHUP)
        wait_until("the withdrawn job to be taken over",
                   lambda: any(ag.alive() and ag is not victim and
                               ag.status()["agents"][0]["running"] > 0 for ag in mesh.agents), 20)
        check(time.monotonic() - t0 < 30, "the job waited for failure detection")
        check(victim.alive(), "the reloaded agent exited")
        check(victim.status()["agents"][0]["running"] == 0, "the withdrawn job still runs")
        promises = {x["name"]: x for x in json.loads(victim.vow("promises", "--json").stdout)["agents"]}
        check(promises[victim.name]["promises"] == [], f"advert after reload: {promises[victim.name]}")
        other = next(ag for ag in mesh.agents if ag is not victim)
        check_copy(mesh, other, data)
        # A broken config on SIGHUP: logged with its location, the agent runs on unchanged.
        with open(victim.config, "a") as f:
            f.write("\n[agent]\nname = 5\n")
        victim.proc.send_signal(signal.SIGHUP)
        wait_until("the reload error to be logged",
                   lambda: "config not reloaded" in victim.tail(40), 10)
        check(re.search(r"agent-\w+\.toml:\d+:\d+", victim.tail(40)), victim.tail(40))
        check(victim.alive() and victim.status()["agent"]["name"] == victim.name,
              "the agent did not survive a bad reload")
    finally:
        mesh.cleanup()


def scenario_memo_shard():
    mesh = Mesh(VOW, VOWD, [os.path.join(HERE, "perfile.toml")])
    try:
        corpus = os.path.join(mesh.root, "corpus")
        make_corpus(corpus)
        mesh.add("a", [("perfile/count", 2), ("perfile/merge", 1)],
                 sources=[("perfile/corpus", corpus, True)])
        mesh.add("b", [("perfile/count", 2), ("perfile/merge", 1)])
        mesh.start()
        a = mesh.agents[0]
        wait_done(a, "perfile")
        before = done_jobs(a.status())
        files = len(os.listdir(corpus))
        check(len(before) == files + 1, f"{len(before)} jobs for {files} files and a merge")
        with open(os.path.join(corpus, sorted(os.listdir(corpus))[0]), "a") as f:
            f.write("\nzyzzyva zyzzyva\n")
        wait_until("the changed shard and the merge to be done",
                   lambda: len(done_jobs(a.status()) - before) >= 2, 60)
        wait_done(a, "perfile")
        new = done_jobs(a.status()) - before
        check(sorted(s for s, _ in new) == ["count", "merge"],
              f"jobs that ran again for one changed file: {sorted(new)}")
        totals = read_artifact(mesh, canonical_output(a.status(), "perfile", "merge", "totals"))
        check(b"2 zyzzyva\n" in totals, "the merge does not include the change")
        # vow why tells the reused results from the recomputed ones.
        for stage, job in done_jobs(a.status()):
            why = json.loads(a.vow("why", job, "--json").stdout)
            check(why["memoized"] == ((stage, job) in before),
                  f"vow why {stage} {job[:12]}: memoized {why['memoized']}")
        # The source's import cache (docs/storage.md): once the change is past the racy
        # window (3 s) and a poll (5 s) has remembered it, a restarted agent snapshots the
        # unchanged corpus without reading a file.
        time.sleep(9)
        check(len(os.listdir(os.path.join(a.state, "sources"))) == 1, "no import cache saved")
        with open(a.log_path, errors="replace") as f:
            seen = len(f.read())
        a.kill(signal.SIGTERM)
        a.start()

        def snapshot_after_restart():
            with open(a.log_path, errors="replace") as f:
                return re.search(r"source perfile/corpus snapshot \w+ \(\d+ bytes; (\d+) of (\d+) "
                                 r"files read", f.read()[seen:])
        m = wait_until("the first snapshot after the restart", snapshot_after_restart, 30)
        n = sum(len(names) for _, _, names in os.walk(corpus))
        check(m.group(1) == "0" and m.group(2) == str(n), f"after the restart: {m.group(0)}")
    finally:
        mesh.cleanup()


def scenario_untrusted():
    mesh, data = slow_mesh({"heartbeat": "100ms", "suspect_after": "300ms",
                            "dead_after": "600ms"})
    try:
        # An agent with a key nobody trusts, promising the stage with more capacity.
        rogue = mesh.add("rogue", [("slow/copy", 8)], trusted=False)
        rogue.write_config([a.endpoint for a in mesh.agents if a is not rogue])
        rogue.start()
        check_copy(mesh, mesh.agents[0], data)
        for ag in mesh.agents[:3]:
            st = ag.status()
            ids = {x["id"] for x in st["agents"]}
            check(rogue.id not in ids, f"{ag.name} lists the untrusted agent")
            for p in st["pipelines"]:
                for s in p["stages"]:
                    for r in s.get("results", []):
                        check(r["executor"] != rogue.id, "a result by the untrusted agent")
        refused = sum(ag.status()["rejected"]["untrusted_handshake"] for ag in mesh.agents[:3])
        check(refused > 0, "no untrusted handshake was counted")
    finally:
        mesh.cleanup()


def scenario_bad_config():
    mesh = Mesh(VOW, VOWD, [WORDCOUNT])
    try:
        state = os.path.join(mesh.root, "never-made")
        bad = os.path.join(mesh.root, "agent-bad.toml")
        with open(bad, "w") as f:
            f.write(f'[agent]\nname = "bad"\nlisten = "tcp://127.0.0.1:7999"\n'
                    f'state_dir = "{state}"\npipelines = ["wordcount.toml"]\n\n'
                    '[[promise]]\nstage = "wordcount/cuont"\n')
        p = subprocess.run([VOWD, "--config", bad], capture_output=True, text=True, timeout=30)
        check(p.returncode == 1, f"vowd exit status {p.returncode}")
        check(re.search(r"agent-bad\.toml:\d+:\d+: .*cuont", p.stderr),
              f"no located error: {p.stderr}")
        check(not os.path.exists(state), "vowd touched the state directory")
        p = subprocess.run([VOWD, "--bogus"], capture_output=True, text=True, timeout=30)
        check(p.returncode == 2, f"bad arguments: exit status {p.returncode}")
        # control_group: a group that does not exist refuses to start, touching nothing;
        # an existing one makes the control socket 0660 owned by that group.
        def agent_file(group):
            with open(bad, "w") as f:
                f.write(f'[agent]\nname = "grp"\nlisten = "tcp://127.0.0.1:{free_port()}"\n'
                        f'state_dir = "{state}"\ncontrol_group = "{group}"\n')
        agent_file("no-such-group-here")
        p = subprocess.run([VOWD, "--config", bad], capture_output=True, text=True, timeout=30)
        check(p.returncode == 1 and "no-such-group-here" in p.stderr, f"bad group: {p.stderr}")
        check(not os.path.exists(state), "vowd touched the state directory")
        agent_file("nogroup")
        proc = subprocess.Popen([VOWD, "--config", bad], stderr=subprocess.DEVNULL)
        try:
            sock = os.path.join(state, "control.sock")
            wait_until("the control socket", lambda: os.path.exists(sock), 20)
            st = os.stat(sock)
            check(stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == grp.getgrnam("nogroup").gr_gid,
                  f"control socket mode {oct(st.st_mode)} gid {st.st_gid}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        mesh.cleanup()


def chunk_counts(agent):
    """vow_artifact_chunks_total of AGENT's /metrics, {(direction, link): count}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'^vow_artifact_chunks_total\{direction="(\w+)",link="(\w+)"\} (\S+)$',
                         text, re.M):
        out[(m.group(1), m.group(2))] = float(m.group(3))
    check(len(out) == 5, f"vow_artifact_chunks_total of {agent.name}: {out}")
    return out


def scenario_bulk():
    """bulk_transfer = "integrity" on a and b, not on c: the wordcount pipeline is right;
    artifacts between a and b go on the plain link, none to or from c does."""
    mesh = Mesh(VOW, VOWD, [WORDCOUNT])
    try:
        corpus = os.path.join(mesh.root, "corpus")
        make_corpus(corpus)
        # Only b splits and counts: the corpus (held by a) must reach it.
        a = mesh.add("a", [("wordcount/top", 1)], sources=[("wordcount/corpus", corpus, False)])
        b = mesh.add("b", [("wordcount/split", 1), ("wordcount/count", 2),
                           ("wordcount/merge", 1)])
        c = mesh.add("c", [("wordcount/top", 1)])
        for ag in (a, b, c):
            ag.http_port = free_port()
        for ag in (a, b):
            ag.agent_lines.append('bulk_transfer = "integrity"')
        mesh.start()
        wait_done(c, "wordcount")
        top = canonical_output(c.status(), "wordcount", "top", "report")
        report = read_artifact(mesh, top).decode()
        expected = word_totals(corpus)
        check(report == "".join(expected.splitlines(True)[:20]), f"report differs:\n{report}")
        # The metrics page is a snapshot the agent remakes on its loop's turns: the counts
        # of a run that just ended may take a moment to show.
        try:
            wait_until("a's and b's plain chunks counted",
                       lambda: chunk_counts(a)[("out", "plain")] > 0 and
                       chunk_counts(b)[("in", "plain")] > 0, 10)
        except TestFailure:
            pass  # said below, with the counts
        ca, cb, cc = chunk_counts(a), chunk_counts(b), chunk_counts(c)
        check(ca[("out", "plain")] > 0 and cb[("in", "plain")] > 0,
              f"the corpus went from a to b plain: a {ca}, b {cb}")
        check(cc[("in", "plain")] == 0 and cc[("out", "plain")] == 0,
              f"c allows no plain link, yet: {cc}")
        check(all(x[("in", "dropped")] == 0 for x in (ca, cb, cc)), "plain frames dropped")
        # Every agent checked what it took: verify passes on each.
        for ag in (a, b, c):
            v = ag.vow("verify", "--json", check_rc=False)
            check(v.returncode == 0, f"vow verify on {ag.name}: {v.stdout[-1000:]}")
    finally:
        mesh.cleanup()


def metric(agent, name, labels=""):
    """The sample NAME{LABELS} of AGENT's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$"
    m = re.search("^" + pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


ATTACH_PIPELINE = """
[pipeline]
name = "attach"

[[source]]
name = "seed"

[[stage]]
name = "up"
inputs = ["seed"]
outputs = ["small", "big"]
run = "tr a-z A-Z < $VOW_IN_seed > $VOW_OUT_small && head -c 10000 /dev/zero | tr '\\\\0' x > $VOW_OUT_big"

[[stage]]
name = "down"
inputs = ["up.small", "up.big"]
outputs = ["both"]
run = "cat $VOW_IN_small > $VOW_OUT_both && tr -d x < $VOW_IN_big | wc -c >> $VOW_OUT_both"

[[stage]]
name = "peek"
inputs = ["seed"]
outputs = ["n"]
run = "wc -c < $VOW_IN_seed > $VOW_OUT_n"
"""


def scenario_attached():
    """A small output goes to the next job's agent with its result (no transfer), and a
    small source file with its version; a large output is fetched (docs/coordination.md,
    "Small outputs travel with their result")."""
    tmp = tempfile.mkdtemp(prefix="vow-attach-")
    pipe = os.path.join(tmp, "attach.toml")
    with open(pipe, "w") as f:
        f.write(ATTACH_PIPELINE)
    mesh = Mesh(VOW, VOWD, [pipe])
    try:
        seed = os.path.join(mesh.root, "seed")
        with open(seed, "w") as f:
            f.write("hello, attached world\n")
        a = mesh.add("a", [("attach/up", 1)], sources=[("attach/seed", seed, True)])
        b = mesh.add("b", [("attach/down", 1), ("attach/peek", 1)])
        for ag in (a, b):
            ag.http_port = free_port()
            ag.agent_lines.append("replicas = 1")  # no copies: b fetches only what down needs
        mesh.start()
        wait_done(b, "attach")
        both = read_artifact(mesh, canonical_output(b.status(), "attach", "down", "both")).decode()
        check(both.split() == ["HELLO,", "ATTACHED", "WORLD", "0"], f"down wrote {both!r}")
        n = read_artifact(mesh, canonical_output(b.status(), "attach", "peek", "n")).decode()
        check(n.split() == ["22"], f"peek wrote {n!r}")
        wait_until("b's counts on its metrics page",
                   lambda: metric(b, "vow_attached_outputs_total", 'direction="used"') >= 2, 10)
        check(metric(a, "vow_attached_outputs_total", 'direction="out"') >= 1,
              "a sent no small output with its result")
        # Only the 10,000-byte output came by transfer: the 22-byte source file came with
        # its version.
        got = metric(b, "vow_artifact_received_bytes_total")
        check(got == 10000, f"b received {got:.0f} bytes by transfer, not the large output's 10000")
        check(metric(b, "vow_messages_rejected_total", 'reason="attachment_mismatch"') == 0,
              "attached bytes refused")
        # A new version of the source (a's wait checks it): its changed file goes with it
        # too, and the large output, the same bytes again, is held already.
        with open(seed, "w") as f:
            f.write("the second seed, of 29 bytes\n")
        wait_done(a, "attach")
        wait_done(b, "attach")
        n = read_artifact(mesh, canonical_output(b.status(), "attach", "peek", "n")).decode()
        check(n.split() == ["29"], f"peek wrote {n!r} for the new seed")
        both = read_artifact(mesh, canonical_output(b.status(), "attach", "down", "both")).decode()
        check(both.split()[:2] == ["THE", "SECOND"], f"down wrote {both!r} for the new seed")
        # Used with their statements now: the first two, the new small output and the new
        # seed (the metrics page is a snapshot made every few moments).
        wait_until("b's counts for the new seed",
                   lambda: metric(b, "vow_attached_outputs_total", 'direction="used"') >= 4, 10)
        got = metric(b, "vow_artifact_received_bytes_total")
        check(got == 10000, f"b received {got:.0f} bytes by transfer after the new seed")
        v = b.vow("verify", "--json", check_rc=False)
        check(v.returncode == 0, f"vow verify on b: {v.stdout[-1000:]}")
    finally:
        mesh.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def huge_pages_asked(pid):
    """Whether any mapping of the process asks for transparent huge pages (VmFlags hg)."""
    with open(f"/proc/{pid}/smaps") as f:
        return any(line.startswith("VmFlags:") and " hg" in line for line in f)


def scenario_heap():
    """vowd runs itself again with its heap tuned (huge pages asked for it), under its own
    name; VOWD_MALLOC=default, or glibc.malloc tunables set by the caller, leave glibc's
    defaults alone (docs/agent.md, "Memory"; agent_test checks the environment put back)."""
    mesh = Mesh(VOW, VOWD, [WORDCOUNT], named_seeds=False)
    try:
        corpus = os.path.join(mesh.root, "corpus")
        make_corpus(corpus)
        everything = [("wordcount/split", 1), ("wordcount/count", 2), ("wordcount/merge", 1),
                      ("wordcount/top", 1)]
        a = mesh.add("a", everything, sources=[("wordcount/corpus", corpus, False)])
        b = mesh.add("b", everything, prefix=["env", "VOWD_MALLOC=default"])
        c = mesh.add("c", everything, prefix=["env", "GLIBC_TUNABLES=glibc.rtld.nns=4"])
        d = mesh.add("d", everything,
                     prefix=["env", "GLIBC_TUNABLES=glibc.malloc.perturb=0"])
        mesh.start()
        wait_done(a, "wordcount")
        check(huge_pages_asked(a.proc.pid), "a: no mapping asks for huge pages")
        for ag in (a, c):
            with open(f"/proc/{ag.proc.pid}/comm") as f:
                name = f.read().strip()
            check(name == "vowd", f"{ag.name} runs as '{name}', not vowd")
        check(not huge_pages_asked(b.proc.pid), "b (VOWD_MALLOC=default) asks for huge pages")
        check(huge_pages_asked(c.proc.pid), "c (other tunables given): no huge pages asked")
        check(not huge_pages_asked(d.proc.pid), "d (its own malloc tunables) asks for huge pages")
        # A value it does not know: refused at start, saying which variable and what it takes.
        p = subprocess.run([VOWD, "--config", a.config], capture_output=True, text=True,
                           env={**os.environ, "VOWD_MALLOC": "off"}, timeout=30)
        check(p.returncode == 2 and "VOWD_MALLOC='off'" in p.stderr,
              f"VOWD_MALLOC=off: rc {p.returncode}: {p.stderr}")
    finally:
        mesh.cleanup()


def fnv1a64(text):
    h = 1469598103934665603
    for b in text.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def scenario_noted_run():
    """A run noted in the running-job journal whose row was never committed (the agent
    stopped between the start and the commit: docs/agent.md, "The running-job table") is
    taken over at the restart like a row: the core has no claim for it, so its process
    is stopped, not left running where a new run of the job could meet it."""
    mesh, data = slow_mesh()
    a = mesh.agents[0]
    leftover = None
    try:
        wait_done(a, "slow")
        for ag in mesh.agents:
            ag.kill(signal.SIGTERM)
        job = hashlib.blake2b(b"a job no claim names", digest_size=32).hexdigest()
        work = os.path.join(a.state, "jobs", job + ".1")
        os.makedirs(work)
        leftover = subprocess.Popen(["sleep", "600"], cwd=work, start_new_session=True,
                                    env={"PATH": "/usr/bin:/bin", "VOW_WORKDIR": work})
        head = f"1 {job} 1 {leftover.pid} {int(time.time() * 1000)}"
        line = f"{head} {fnv1a64(head + ' ' + work):016x} {work}\n"
        with open(os.path.join(a.state, "running.journal"), "w") as f:
            f.write(line)
        a.start()
        wait_until("the noted run's process to be stopped",
                   lambda: leftover.poll() is not None, 30)
        log = open(a.log_path, errors="replace").read()
        check(f"job {job[:12]} epoch 1 (pid {leftover.pid}) was started with no row committed"
              in log, "the restart did not take the noted run over")
        wait_until("the noted run's work directory to go", lambda: not os.path.exists(work), 30)
    finally:
        if leftover is not None and leftover.poll() is None:
            leftover.kill()
        mesh.cleanup()


SCENARIOS = {
    "heap": scenario_heap,
    "bulk": scenario_bulk,
    "attached": scenario_attached,
    "noted-run": scenario_noted_run,
    "wordcount": scenario_wordcount,
    "failover": scenario_failover,
    "sigterm": scenario_sigterm,
    "reload": scenario_reload,
    "memo-shard": scenario_memo_shard,
    "untrusted": scenario_untrusted,
    "bad-config": scenario_bad_config,
}

if __name__ == "__main__":
    run_scenario(SCENARIOS, sys.argv[4])
