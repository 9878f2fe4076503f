#!/usr/bin/python3
"""The vow command line against a real mesh (issue: query any agent for state, lineage
and proof). Three vowd processes run the wordcount example, a failing pipeline and a
slow one; then every query command is run as a user would, its --json parsed and
checked against what the mesh really did, and its human output checked for the facts
a user reads.

usage: cli_test.py VOW VOWD SOURCE_ROOT
"""
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import (Mesh, TestFailure, canonical_output, check, free_port,  # noqa: E402
                  read_artifact, wait_until)
from mesh_test import make_corpus, word_totals  # noqa: E402
from dot_labels import labels, rendered_texts  # noqa: E402

VOW, VOWD, ROOT = (os.path.abspath(a) for a in sys.argv[1:4])
HERE = os.path.dirname(os.path.abspath(__file__))
WORDCOUNT = os.path.join(ROOT, "examples", "wordcount", "wordcount.toml")


def run(*args, timeout=60):
    return subprocess.run([VOW, *args], capture_output=True, text=True, timeout=timeout)


def ok(agent, *args):
    p = run(*args, "--agent", os.path.join(agent.state, "control.sock"))
    check(p.returncode == 0, f"vow {' '.join(args)}: rc {p.returncode}: {p.stderr}")
    return p


def ask(agent, *args):
    return json.loads(ok(agent, *args, "--json").stdout)


PROM_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*)?\})? (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$')


def parse_prometheus(text):
    """Samples of a Prometheus text exposition, {(name, labels): value}; raises on any
    line that is not a comment, a TYPE/HELP line or a well-formed sample."""
    samples = {}
    types = {}
    family = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            check(kind in ("counter", "gauge", "histogram", "summary", "untyped"),
                  f"metrics line {n}: bad type {kind}")
            check(name not in types, f"metrics line {n}: a second TYPE for {name}")
            types[name] = kind
            family = name
            continue
        if line.startswith("#"):
            continue
        m = PROM_LINE.match(line)
        check(m, f"metrics line {n} is not Prometheus text: {line!r}")
        # A family's samples follow its TYPE line, together.
        check(re.sub(r"_(bucket|sum|count)$", "", m.group(1)) == family or m.group(1) == family,
              f"metrics line {n}: {m.group(1)} outside its family (after {family})")
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                         m.group(3) or "")))
        samples[(m.group(1), labels)] = float(m.group(7))
    return samples, types


def flip_first_byte(path):
    """Corrupts a stored object (read-only in the store) in place."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 0x20]))
    os.chmod(path, 0o444)


def shards_of(done_jobs):
    split = [j for j in done_jobs if j["stage"] == "split"][0]["results"]
    return [r for r in split if r["canonical"]][0]["outputs"]["shards"]


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def main():
    mesh = Mesh(VOW, VOWD, [WORDCOUNT, os.path.join(HERE, "fail.toml"),
                            os.path.join(HERE, "slow.toml")])
    try:
        corpus = os.path.join(mesh.root, "corpus")
        make_corpus(corpus)
        data = os.path.join(mesh.root, "data.txt")
        with open(data, "w") as f:
            f.write("some data\n")
        client_key = os.path.join(mesh.root, "client.key")
        client_id = subprocess.run([VOW, "keys", "gen", "--out", client_key], check=True,
                                   capture_output=True, text=True).stdout.strip()
        a = mesh.add("a", [("wordcount/split", 1), ("wordcount/count", 2), ("wordcount/top", 1),
                           ("fail/boom", 1), ("slow/copy", 1)],
                     sources=[("wordcount/corpus", corpus, False), ("fail/data", data, False),
                              ("slow/data", data, False)])
        b = mesh.add("b", [("wordcount/split", 1), ("wordcount/count", 2),
                           ("wordcount/merge", 1)])
        c = mesh.add("c", [("wordcount/count", 2), ("wordcount/merge", 1), ("wordcount/top", 1)])
        a.http_port = free_port()
        a.trust_clients = [client_id]
        started = time.time()
        mesh.start()

        # vow wait: timed out (4) while the slow job sleeps, failed (1) naming the stage,
        # not found (3), done (0).
        p = run("wait", "slow", "--timeout", "1s", "--state-dir", a.state)
        check(p.returncode == 4 and "timed out" in p.stderr, f"wait timeout: {p.returncode} {p.stderr}")
        p = run("wait", "nosuch", "--timeout", "10s", "--state-dir", a.state)
        check(p.returncode == 3, f"wait for no such pipeline: {p.returncode} {p.stderr}")
        p = run("wait", "fail", "--timeout", "60s", "--state-dir", a.state)
        check(p.returncode == 1 and "stage boom" in p.stderr, f"wait failed: {p.returncode} {p.stderr}")
        for pl in ("wordcount", "slow"):
            p = run("wait", pl, "--timeout", "120s", "--state-dir", c.state, timeout=200)
            check(p.returncode == 0, f"wait {pl}: {p.returncode} {p.stderr}")
        wait_until("a to see every wordcount job done",
                   lambda: canonical_output(a.status(), "wordcount", "top", "report"), 30)

        # vow status --json: the schema of docs/cli.md.
        s = ask(a, "status")
        names = sorted(ag["name"] for ag in s["agents"])
        check(names == ["a", "b", "c"], f"status agents: {names}")
        check(all({"name", "id", "alive"} <= set(ag) for ag in s["agents"]), "status agent keys")
        wc = [p for p in s["pipelines"] if p["name"] == "wordcount"][0]
        check(re.fullmatch(r"[0-9a-f]{64}", wc["digest"]), "pipeline digest")
        for st in wc["stages"]:
            check(set(st["jobs"]) >= {"pending", "ready", "running", "done", "failed"},
                  f"stage job keys {st['jobs']}")

        # vow jobs: every wordcount job done, with one canonical result each.
        jobs = ask(a, "jobs", "--pipeline", "wordcount")["jobs"]
        done = [j for j in jobs if j["state"] == "done"]
        check(len(done) == 1 + 8 + 1 + 1, f"wordcount jobs done: {len(done)} of {len(jobs)}")
        for j in done:
            check(sum(r["canonical"] for r in j["results"]) == 1, f"canonical of {j['id']}")
            check(j["claims"] and all(cl["epoch"] >= 1 for cl in j["claims"]), "claims")
            check(j["duration_ms"] >= 0 and j["executor"]["name"] in ("a", "b", "c"), "executor")
        counts = ask(a, "jobs", "--pipeline", "wordcount", "--stage", "count", "--state", "done")
        check(len(counts["jobs"]) == 8 and all(j["stage"] == "count" for j in counts["jobs"]),
              "jobs --stage count --state done")
        failed = ask(a, "jobs", "--state", "failed")["jobs"]
        check(len(failed) == 1 and failed[0]["stage"] == "boom", f"failed jobs: {failed}")
        human = ok(a, "jobs", "--pipeline", "wordcount").stdout
        check(re.search(r"^JOB\s+STAGE\s+STATE", human, re.M) and "wordcount/merge" in human
              and "11 jobs" in human, f"jobs table:\n{human}")

        # vow job: claims, results, attempts, log tails; by a prefix of the id.
        boom = ask(a, "job", failed[0]["id"][:10])
        check(boom["state"] == "failed" and boom["results"][0]["exit_status"] == 3 and
              not boom["results"][0]["ok"], f"job boom: {boom}")
        check("about to fail" in boom["logs"].get("stderr", ""), f"boom stderr tail: {boom['logs']}")
        merge = [j for j in done if j["stage"] == "merge"][0]
        mj = ask(a, "job", merge["id"])
        check(mj["inputs"]["counts"]["kind"] == "tree", f"merge input: {mj.get('inputs')}")
        human = ok(a, "job", merge["id"]).stdout
        check(merge["id"] in human and "canonical" in human and "claims" in human, human)

        # vow peers / vow promises: the mesh as a sees it.
        peers = ask(a, "peers")
        check(sorted(p["name"] for p in peers["peers"]) == ["b", "c"] and
              all(p["alive"] for p in peers["peers"]), f"peers: {peers}")
        check(peers["self"]["name"] == "a", "peers self")
        prom = {x["name"]: x for x in ask(b, "promises")["agents"]}
        check(sorted(prom) == ["a", "b", "c"], f"promises agents: {sorted(prom)}")
        check({f"{p['pipeline']}/{p['stage']}" for p in prom["c"]["promises"]} ==
              {"wordcount/count", "wordcount/merge", "wordcount/top"}, f"c promises: {prom['c']}")
        check({"pipeline": "wordcount", "source": "corpus"} in prom["a"]["sources"], "a sources")
        human = ok(b, "promises").stdout
        check(re.search(r"^c\s+runs\s+wordcount/top", human, re.M), human)

        # vow lineage: from the report back to the corpus version, every step signed.
        report = canonical_output(c.status(), "wordcount", "top", "report")
        lin = ask(b, "lineage", "wordcount/top.report")
        check(lin["artifacts"] == [report], "lineage root")
        kinds = sorted((st["kind"], st.get("stage", "")) for st in lin["steps"])
        check(kinds.count(("job", "count")) == 8 and ("job", "split") in kinds and
              ("job", "merge") in kinds and ("job", "top") in kinds and
              ("source", "") in kinds, f"lineage steps: {kinds}")
        ids = {st["id"] for st in lin["steps"]}
        check(all(e["from"] in ids and e["to"] in ids for e in lin["edges"]), "dangling edge")
        check(len(lin["edges"]) == 1 + 8 + 8 + 1, f"lineage edges: {len(lin['edges'])}")
        for st in lin["steps"]:
            if st["kind"] == "job":
                check(re.fullmatch(r"[0-9a-f]{64}", st["stage_digest"]) and
                      st["executor"]["id"] == st["signer"]["id"], f"step {st}")
        by_digest = ask(b, "lineage", report)
        check(len(by_digest["steps"]) == len(lin["steps"]), "lineage by digest")
        dot = ok(b, "lineage", "wordcount/top.report", "--dot").stdout
        check(dot.startswith("digraph lineage {") and dot.count("->") == len(lin["edges"]), dot)
        # Each step's label reads, once drawn, as lines: stage, job, executor; never a
        # literal backslash (Graphviz itself draws it when installed).
        shown = labels(dot)
        top_step = [st for st in lin["steps"] if st.get("stage") == "top"][0]
        check(["wordcount/top", "job " + top_step["job"][:12],
               "by " + top_step["executor"]["name"]] in shown, f"lineage labels: {shown}")
        check(any(lb[0] == "source wordcount/corpus v1" for lb in shown), f"labels: {shown}")
        check(not any("\\" in line for lb in shown for line in lb), f"escapes in {shown}")
        texts = rendered_texts(dot)
        check(texts is None or ("wordcount/top" in texts and
                                not any("\\" in t for t in texts)), f"drawn: {texts}")
        human = ok(b, "lineage", "wordcount/top.report").stdout
        check("source wordcount/corpus" in human and "wordcount/top" in human, human)
        check(human.index("source wordcount/corpus") < human.index("  wordcount/top\n"),
              "lineage is not upstream first")

        # vow why: the parts of the id recompute it; the rule that chose the result.
        top_job = [j for j in done if j["stage"] == "top"][0]["id"]
        why = ask(c, "why", top_job[:12])
        check(why["id_parts"]["matches"] and why["id_parts"]["recomputed_job_id"] == top_job,
              f"why: {why['id_parts']}")
        check(why["memoized"] is False and why["from_result"], f"why memo: {why}")
        human = ok(c, "why", top_job).stdout
        check("(matches)" in human and "rule:" in human, human)

        # vow get: a file and a tree, fetched by an agent without a copy if there is one.
        out = os.path.join(mesh.root, "got-report")
        ok(b, "get", "wordcount/top.report", "-o", out)
        with open(out, "rb") as f:
            check(f.read() == read_artifact(mesh, report), "vow get report bytes")
        # -o -: the bytes on stdout, no file named "-".
        p = subprocess.run([VOW, "get", "wordcount/top.report", "-o", "-", "--state-dir", b.state],
                           capture_output=True, cwd=mesh.root, timeout=60)
        check(p.returncode == 0 and p.stdout == read_artifact(mesh, report) and
              not os.path.exists(os.path.join(mesh.root, "-")), f"get -o -: {p.stderr}")
        p = run("get", shards_of(done), "-o", "-", "--state-dir", b.state)
        check(p.returncode == 1 and "is a tree" in p.stderr and not p.stdout, f"tree to stdout: {p.stderr}")
        # Not found (3): a job, an artifact, a stage no agent knows.
        p = run("job", "abcdef0123", "--state-dir", a.state)
        check(p.returncode == 3 and "no job" in p.stderr, f"no such job: {p.returncode} {p.stderr}")
        p = run("lineage", "wordcount/nosuch.out", "--state-dir", a.state)
        check(p.returncode == 3 and "no stage" in p.stderr, f"no such stage: {p.returncode} {p.stderr}")
        expected = word_totals(corpus)
        with open(out) as f:
            check(f.read() == "".join(expected.splitlines(True)[:20]), "report content")
        split = [j for j in done if j["stage"] == "split"][0]["results"]
        shards = [r for r in split if r["canonical"]][0]["outputs"]["shards"]
        tree_out = os.path.join(mesh.root, "got-shards")
        ok(a, "get", shards, "-o", tree_out)
        check(len(os.listdir(tree_out)) == 8, f"shards tree: {os.listdir(tree_out)}")
        # Corrupt a's stored copy of the report: vow get says so, a drops it and fetches
        # it again from another holder, and the bytes written are the right ones; a's
        # store holds a good copy again (the next get reads it without a repair).
        obj = os.path.join(a.state, "artifacts", "objects", report[:2], report)
        wait_until("a to hold the report", lambda: os.path.exists(obj) or
                   ok(a, "get", report, "-o", os.path.join(mesh.root, "prime")), 30)
        good = read_artifact(mesh, report)
        flip_first_byte(obj)
        repaired = os.path.join(mesh.root, "got-repaired")
        p = run("get", report, "-o", repaired, "--state-dir", a.state)
        check(p.returncode == 0 and "corrupt" in p.stderr and "another holder" in p.stderr,
              f"get of a corrupt local copy: rc {p.returncode}: {p.stderr}")
        with open(repaired, "rb") as f:
            check(f.read() == good, "the repaired get wrote other bytes")
        with open(obj, "rb") as f:
            check(f.read() == good, "a's store still holds the corrupt copy")
        p = run("get", report, "-o", "-", "--state-dir", a.state)
        check(p.returncode == 0 and "corrupt" not in p.stderr, f"get after the repair: {p.stderr}")
        # The same for a file inside a tree: the tree is fetched again with that file.
        tree_obj = os.path.join(a.state, "artifacts", "objects", shards[:2], shards + ".tree")
        first = sorted(os.listdir(tree_out))[0]
        with open(os.path.join(tree_out, first), "rb") as f:
            shard_bytes = f.read()
        child = None
        for d in os.listdir(os.path.join(a.state, "artifacts", "objects")):
            for name in os.listdir(os.path.join(a.state, "artifacts", "objects", d)):
                path = os.path.join(a.state, "artifacts", "objects", d, name)
                if not name.endswith(".tree") and open(path, "rb").read() == shard_bytes:
                    child = path
        check(os.path.exists(tree_obj) and child, "a holds the shards tree and its first file")
        flip_first_byte(child)
        tree_again = os.path.join(mesh.root, "got-shards-repaired")
        p = run("get", shards, "-o", tree_again, "--state-dir", a.state)
        check(p.returncode == 0 and "corrupt" in p.stderr,
              f"get of a tree with a corrupt file: rc {p.returncode}: {p.stderr}")
        with open(os.path.join(tree_again, first), "rb") as f:
            check(f.read() == shard_bytes and sorted(os.listdir(tree_again)) ==
                  sorted(os.listdir(tree_out)), "the repaired tree")
        with open(child, "rb") as f:
            check(f.read() == shard_bytes, "a's store still holds the corrupt shard")

        # Live verify against an agent.
        v = ask(c, "verify")
        check(v["ok"] and v["statements"] > 20 and v["links"] > 10, f"live verify: {v}")

        # Remote queries over CURVE: a trusted client key works, another does not.
        remote = f"{a.id}@{a.endpoint}"
        p = run("status", "--json", "--agent", remote, "--key", client_key)
        check(p.returncode == 0, f"remote status: {p.returncode} {p.stderr}")
        check(sorted(x["name"] for x in json.loads(p.stdout)["agents"]) == ["a", "b", "c"],
              "remote status agents")
        p = run("jobs", "--json", "--agent", remote, "--key", client_key, "--state", "failed")
        check(p.returncode == 0 and len(json.loads(p.stdout)["jobs"]) == 1, f"remote jobs {p.stderr}")
        # vow get from a host without an agent: the objects stream over the client's link,
        # each verified; a file, to a path and to stdout, and a tree.
        remote_out = os.path.join(mesh.root, "remote-report")
        p = run("get", "wordcount/top.report", "-o", remote_out, "--agent", remote, "--key",
                client_key)
        check(p.returncode == 0, f"remote get: {p.returncode} {p.stderr}")
        with open(remote_out, "rb") as f:
            check(f.read() == read_artifact(mesh, report), "remote get report bytes")
        p = subprocess.run([VOW, "get", report, "-o", "-", "--agent", remote, "--key", client_key],
                           capture_output=True, cwd=mesh.root, timeout=60)
        check(p.returncode == 0 and p.stdout == read_artifact(mesh, report),
              f"remote get -o -: {p.stderr}")
        remote_tree = os.path.join(mesh.root, "remote-shards")
        p = run("get", shards, "-o", remote_tree, "--agent", remote, "--key", client_key)
        check(p.returncode == 0 and sorted(os.listdir(remote_tree)) == sorted(os.listdir(tree_out)),
              f"remote get of a tree: {p.returncode} {p.stderr}")
        for name in os.listdir(tree_out):
            with open(os.path.join(tree_out, name), "rb") as x, \
                    open(os.path.join(remote_tree, name), "rb") as y:
                check(x.read() == y.read(), f"remote tree entry {name}")
        # A corrupt copy at the remote agent is replaced from another holder (the client
        # asks that agent to repair it) and the remote get then succeeds with the right
        # bytes; the agent's own copy is whole again.
        flip_first_byte(obj)
        p = run("get", report, "-o", remote_out + "-bad", "--agent", remote, "--key", client_key)
        check(p.returncode == 0 and "is corrupt" in p.stderr and "repaired" in p.stderr,
              f"remote get of a corrupt copy: {p.returncode} {p.stderr}")
        with open(remote_out + "-bad", "rb") as f:
            check(f.read() == good, "remote get of a corrupt copy: its bytes")
        with open(obj, "rb") as f:
            check(f.read() == good, "the remote agent's copy is whole again")
        p = run("get", report, "-o", remote_out + "-good", "--agent", remote, "--key", client_key)
        check(p.returncode == 0 and "corrupt" not in p.stderr,
              f"remote get after the repair: {p.returncode} {p.stderr}")
        p = run("get", "wordcount/nosuch.out", "-o", remote_out + "2", "--agent", remote, "--key",
                client_key)
        check(p.returncode == 3 and not os.path.exists(remote_out + "2"),
              f"remote get of nothing: {p.returncode} {p.stderr}")
        stranger = os.path.join(mesh.root, "stranger.key")
        run("keys", "gen", "--out", stranger)
        before = a.status()["rejected"]["untrusted_handshake"]
        p = run("status", "--agent", remote, "--key", stranger, timeout=30)
        check(p.returncode == 1 and "no answer" in p.stderr, f"untrusted client: {p.returncode} {p.stderr}")
        p = run("get", report, "-o", remote_out + "-stranger", "--agent", remote, "--key",
                stranger, timeout=30)
        check(p.returncode == 1 and not os.path.exists(remote_out + "-stranger"),
              f"remote get with an untrusted key: {p.returncode} {p.stderr}")
        wait_until("the refused handshake to be counted",
                   lambda: a.status()["rejected"]["untrusted_handshake"] > before, 10)

        # HTTP: /metrics parses as Prometheus text and agrees with the ledger.
        def body_of_metrics():
            code, ctype, body = http_get(a.http_port, "/metrics")
            check(code == 200 and ctype.startswith("text/plain"), f"/metrics {code} {ctype}")
            return body

        def metrics():
            return parse_prometheus(body_of_metrics())
        samples, types = wait_until(
            "metrics to show the finished pipeline",
            lambda: (lambda st: st if st[0].get(
                ("vow_jobs", (("pipeline", "wordcount"), ("stage", "count"), ("state", "done"))))
                == 8 else None)(metrics()), 10)
        check(types.get("vow_handoff_latency_seconds") == "histogram" and
              types.get("vow_job_duration_seconds") == "histogram", f"types {types}")
        check(samples[("vow_peers_alive", ())] == 2, "peers alive")
        check(samples[("vow_jobs", (("pipeline", "fail"), ("stage", "boom"), ("state", "failed")))]
              == 1, "failed job metric")
        check(samples[("vow_messages_rejected_total", (("reason", "untrusted_handshake"),))] >= 1,
              "rejected metric")
        # Job durations by pipeline and stage: a's count series are the stages it ran,
        # which its vow jobs shows (executor a, done or failed).
        counts = {(dict(k[1])["pipeline"], dict(k[1])["stage"]): v for k, v in samples.items()
                  if k[0] == "vow_job_duration_seconds_count"}
        ran_here = sum(counts.values())
        check(ran_here >= 1 and samples[("vow_results_total", (("outcome", "ok"),))] >= 1,
              f"job duration count {ran_here} results {[(k, v) for k, v in samples.items() if 'result' in k[0] or 'claims' in k[0]]}")
        check(all(p in ("wordcount", "fail", "slow") and s for p, s in counts), f"stages {counts}")
        # Its own statements went to its peers in batches: at least one each, and each
        # result and claim among them (its adverts and the rest too).
        sent = samples.get(("vow_statements_broadcast_total", (("unit", "statement"),)), 0)
        batches = samples.get(("vow_statements_broadcast_total", (("unit", "batch"),)), 0)
        own = samples[("vow_claims_total", ())] + sum(
            v for k, v in samples.items() if k[0] == "vow_results_total")
        check(1 <= batches <= sent and sent >= own, f"broadcast {sent} in {batches} batches, "
              f"{own} claims and results")
        # Statements published at once were signed at once (its advert and pipelines at
        # its start, a result and the next claim): fewer signatures than statements, and
        # every own statement written. Its peers' batches were checked once each.
        signed = samples.get(("vow_statements_signed_total", (("unit", "statement"),)), 0)
        signatures = samples.get(("vow_statements_signed_total", (("unit", "signature"),)), 0)
        shared = samples.get(("vow_shared_signature_statements_total", ()), 0)
        check(1 <= signatures < signed and signed >= sent and shared >= 1,
              f"{signed} own statements in {signatures} signatures, {sent} broadcast; "
              f"{shared} received under a signature checked already")
        for (pl, st), n in counts.items():
            series = (("pipeline", pl), ("stage", st))
            buckets = sorted((float(dict(k[1])["le"]), v) for k, v in samples.items()
                             if k[0] == "vow_job_duration_seconds_bucket" and k[1][1:] == series)
            check(buckets and all(x[1] <= y[1] for x, y in zip(buckets, buckets[1:])) and
                  buckets[-1] == (float("inf"), n), f"{pl}/{st} buckets {buckets}, count {n}")
        # Build, process and ledger gauges; the renamed byte counters.
        info = [k for k in samples if k[0] == "vow_build_info"]
        version = run("--version").stdout.split()[1]
        check(len(info) == 1 and dict(info[0][1])["version"] == version and
              dict(info[0][1])["protocol"].isdigit() and samples[info[0]] == 1,
              f"vow_build_info {info}, vow --version {version}")
        check(abs(samples[("process_start_time_seconds", ())] - started) < 60 and
              samples[("process_cpu_seconds_total", ())] > 0 and
              samples[("process_resident_memory_bytes", ())] > 1 << 20 and
              samples[("process_open_fds", ())] >= 5, "process_* metrics")
        check(samples[("process_open_fds", ())] <= len(os.listdir(f"/proc/{a.proc.pid}/fd")) + 16,
              "process_open_fds counts the agent's descriptors")
        # At least a claim and a result of every job done (and the adverts, pipelines and
        # source versions besides).
        done_jobs = len(ask(a, "jobs", "--state", "done")["jobs"])
        check(done_jobs >= 10 and
              samples[("vow_ledger_statements", ())] >= 2 * done_jobs + 3 and
              samples[("vow_ledger_bytes", ())] >= 4096,
              f"ledger gauges: {samples[('vow_ledger_statements', ())]} statements, "
              f"{done_jobs} jobs done")
        check(samples[("vow_artifact_received_bytes_total", ())] > 0 and
              ("vow_artifact_sent_bytes_total", ()) in samples and
              not any("bytes_sent" in k[0] or "bytes_received" in k[0] for k in samples),
              "artifact byte counters")
        # One spelling of reason labels; sums printed to full precision.
        reasons = [dict(k[1])["reason"] for k in samples if "reason" in dict(k[1])]
        check(reasons and all(re.fullmatch(r"[a-z0-9_]+", r) for r in reasons), f"reasons {reasons}")

        code, _, body = http_get(a.http_port, "/healthz")
        check(code == 200 and body.strip() == "ok", f"/healthz: {code} {body}")
        code, _, body = http_get(a.http_port, "/readyz")
        check(code == 200 and "2 of 2 trusted agents alive" in body, f"/readyz: {code} {body}")
        code, ctype, body = http_get(a.http_port, "/api/status")
        api = json.loads(body)
        check(code == 200 and sorted(x["name"] for x in api["agents"]) == ["a", "b", "c"] and
              {p["name"] for p in api["pipelines"]} == {"wordcount", "fail", "slow"}, "/api/status")

        # Bad arguments: usage on stderr, exit 2.
        for args in (["jobs", "--state", "bogus"], ["lineage"], ["get", report],
                     ["why"], ["nosuchcommand"], ["wait", "wordcount", "--timeout", "soon"]):
            p = run(*args, "--state-dir", a.state) if args[0] != "nosuchcommand" else run(*args)
            check(p.returncode == 2 and ("sage" in p.stderr or "timeout" in p.stderr),
                  f"vow {' '.join(args)}: rc {p.returncode}: {p.stderr}")
        p = run("job", "zz-not-hex", "--state-dir", a.state)
        check(p.returncode == 2 and "not a job id" in p.stderr, f"bad job id: {p.stderr}")
        # Over CURVE too, not found is 3.
        p = run("job", "abcdef0123", "--agent", remote, "--key", client_key)
        check(p.returncode == 3 and "no job" in p.stderr, f"remote no such job: {p.returncode} {p.stderr}")
        # With no other live holder, a corrupt copy cannot be replaced: refused, nothing
        # written, and a's copy left for an operator to look at.
        b.kill(signal.SIGTERM)
        c.kill(signal.SIGTERM)
        wait_until("a to declare b and c dead", lambda: all(
            x.get("liveness") == "dead" for x in a.status()["agents"] if not x["self"]), 30)
        flip_first_byte(obj)
        alone = os.path.join(mesh.root, "got-alone")
        p = run("get", report, "-o", alone, "--state-dir", a.state)
        check(p.returncode == 1 and "corrupt" in p.stderr and "cannot be replaced" in p.stderr
              and not os.path.exists(alone), f"get with no other holder: rc {p.returncode}: {p.stderr}")
        print("cli: every command checked against a completed mesh")
    finally:
        mesh.cleanup()


if __name__ == "__main__":
    try:
        main()
    except TestFailure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
