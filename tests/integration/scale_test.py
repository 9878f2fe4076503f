#!/usr/bin/python3
"""Queries that cost the page, not the history, and artifacts collected by policy, on
real vowd processes.

  paging  two agents run a foreach stage of 230 shards; `vow jobs` page by page gives
          every job exactly once (the same as one unpaged listing), filters by state and
          stage on the agent, `vow status` counts them all (and omits the canonical
          results of a stage too large to list), /metrics has vow_artifact_bytes
  gc      one agent, a source file and a stage copying it; the file changes and the
          stage runs again: `vow gc --dry-run` names the old source version and the
          old output and removes nothing; `vow gc` removes them and nothing the current
          source version or canonical result references (still readable with vow get)
  gc-periodic  two agents with a 1 s GC interval: passes that would find nothing are
          skipped while nothing changes; a new source version runs them again and they
          remove the old version by themselves
  gc-replicas  three agents hold an output; gc on each leaves `replicas` copies
  horizon three agents run 150 shards with a ledger horizon every 100 statements, some
          of them checkpoints: the horizon statements before the newest checkpoint and the
          claims of finished jobs leave the ledger files (no accepts are made), results stay, a
          restart runs nothing again, a fourth agent joins from the newest checkpoint and
          what was kept (taking the settled results on its word), vow verify
  superseded  three agents, 40 shards whose inputs all change three times: the ledger
          files end with about one generation of results, not four

usage: scale_test.py VOW VOWD SCENARIO
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import Mesh, TestFailure, check, free_port, run_scenario, stage_counts, wait_until  # noqa: E402,E501

VOW, VOWD = (os.path.abspath(a) for a in sys.argv[1:3])

FOREACH = """
[pipeline]
name = "many"

[[source]]
name = "items"

[[stage]]
name = "noop"
inputs = ["items"]
foreach = "items"
outputs = []
run = ["/bin/true"]
"""

UPPER = """
[pipeline]
name = "upper"

[[source]]
name = "data"

[[stage]]
name = "up"
inputs = ["data"]
outputs = ["up"]
run = 'tr a-z A-Z < "$VOW_IN_data" > "$VOW_OUT_up"'
"""

COPY = """
[pipeline]
name = "keep"

[[source]]
name = "data"

[[stage]]
name = "copy"
inputs = ["data"]
outputs = ["copy"]
run = 'cp "$VOW_IN_data" "$VOW_OUT_copy"'
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def ask(agent, *args):
    return json.loads(agent.vow(*args, "--json").stdout)


def stored(agent, digest):
    return os.path.exists(os.path.join(agent.state, "artifacts", "objects", digest[:2], digest))


def foreach_files(prefix, n):
    """A directory with the FOREACH pipeline and a source of N small files."""
    root = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"{prefix}-{os.getpid()}")
    os.makedirs(root, exist_ok=True)
    pipe = write(os.path.join(root, "many.toml"), FOREACH)
    items = os.path.join(root, "items")
    os.makedirs(items, exist_ok=True)
    for i in range(n):
        write(os.path.join(items, f"item-{i:04d}"), f"{i}\n")
    return root, pipe, items


def paging():
    n = 230
    root, pipe, items = foreach_files("vow-scale-test", n)
    mesh = Mesh(VOW, VOWD, [pipe])
    try:
        a = mesh.add("a", [("many/noop", 2)], sources=[("many/items", items, False)])
        mesh.add("b", [("many/noop", 2)])
        a.http_port = free_port()
        mesh.start()
        wait_until(f"{n} jobs done",
                   lambda: stage_counts(a.status(), "many").get("noop", {}).get("done") == n,
                   120, 0.2)
        everything = ask(a, "jobs")["jobs"]
        ids = [j["id"] for j in everything]
        check(len(ids) == n and len(set(ids)) == n, f"vow jobs lists {len(ids)} jobs, not {n}")
        check(ids == sorted(ids), "vow jobs is not in job id order")
        # Page by page: every job exactly once.
        paged, after, pages = [], None, 0
        while True:
            args = ["jobs", "--limit", "17"] + (["--after", after] if after else [])
            page = ask(a, *args)
            check(len(page["jobs"]) <= 17, f"a page of {len(page['jobs'])} jobs for --limit 17")
            paged += [j["id"] for j in page["jobs"]]
            pages += 1
            after = page["next"]
            if after is None:
                break
            check(after == page["jobs"][-1]["id"], "next is not the page's last job")
        check(paged == ids, f"{pages} pages gave {len(paged)} jobs ({len(set(paged))} "
              f"different), not the {n} of one listing")
        check(pages == (n + 16) // 17, f"{pages} pages for {n} jobs of 17")
        # Filters, on the agent.
        done = ask(a, "jobs", "--state", "done", "--stage", "noop", "--limit", "1000")
        check(len(done["jobs"]) == n and done["next"] is None, "--state done --stage noop")
        check(ask(a, "jobs", "--state", "running")["jobs"] == [], "running jobs after the run")
        check(ask(a, "jobs", "--stage", "nosuch")["jobs"] == [], "jobs of an unknown stage")
        bad = a.vow("jobs", "--after", "abcdef", check_rc=False)
        check(bad.returncode != 0, "--after with a prefix should be refused")
        # Status counts every job; a stage this large is not listed result by result.
        st = a.status()
        stage = [s for p in st["pipelines"] if p["name"] == "many" for s in p["stages"]][0]
        check(stage["jobs"]["done"] == n, f"status counts {stage['jobs']}")
        check("results" not in stage and stage.get("results_omitted") == n,
              f"status of a {n}-job stage: results {len(stage.get('results', []))}, "
              f"omitted {stage.get('results_omitted')}")
        # The same counts in /metrics, and the bytes of the store.
        def metrics():
            with urllib.request.urlopen(f"http://127.0.0.1:{a.http_port}/metrics",
                                        timeout=10) as r:
                return r.read().decode()
        wait_until("vow_artifact_bytes in /metrics",
                   lambda: any(line.startswith("vow_artifact_bytes ")
                               for line in metrics().splitlines()), 30, 0.2)
        wait_until("done jobs in /metrics", lambda: f'vow_jobs{{pipeline="many",stage="noop",'
                   f'state="done"}} {n}' in metrics(), 30, 0.2)
    finally:
        mesh.cleanup()
        subprocess.run(["rm", "-rf", root])


def copy_output(agent):
    """The output of the COPY pipeline's current result, once done."""
    for p in agent.status()["pipelines"]:
        for s in p["stages"]:
            if s["name"] == "copy" and s.get("state") == "done" and s.get("results"):
                return s["results"][0]["outputs"]["copy"]
    return None


def copy_mesh(prefix):
    """A directory with the COPY pipeline and its data file, and a mesh (no agents yet)."""
    root = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"{prefix}-{os.getpid()}")
    os.makedirs(root, exist_ok=True)
    pipe = write(os.path.join(root, "keep.toml"), COPY)
    data = write(os.path.join(root, "data.txt"), "first version\n")
    return root, data, Mesh(VOW, VOWD, [pipe])


def gc():
    root, data, mesh = copy_mesh("vow-gc-test")
    try:
        a = mesh.add("a", [("keep/copy", 1)], sources=[("keep/data", data, True)])
        mesh.start()

        def output():
            return copy_output(a)
        first = wait_until("the first result", output, 60, 0.1)
        # The stage's output holds the same bytes as the source: one object for both.
        check(stored(a, first), "the first output is not in the store")
        write(data, "second version\n")
        second = wait_until("the second result",
                            lambda: (lambda o: o if o and o != first else None)(output()),
                            60, 0.1)
        check(stored(a, first) and stored(a, second), "both versions are in the store")
        dry = ask(a, "gc", "--dry-run")
        check(dry["dry_run"] and first in dry["removed"],
              f"gc --dry-run would not remove the old version: {dry}")
        check(second not in dry["removed"], "gc --dry-run would remove the current version")
        check(stored(a, first), "gc --dry-run removed something")
        report = ask(a, "gc")
        check(first in report["removed"] and report["removed_bytes"] > 0,
              f"gc did not remove the old version: {report}")
        check(second not in report["removed"], "gc removed the current version")
        check(not stored(a, first), "the old version is still in the store after gc")
        check(stored(a, second), "the current version is gone from the store")
        # What is kept is still served, and nothing is left to collect.
        out = os.path.join(root, "got")
        a.vow("get", second, "-o", out)
        with open(out) as f:
            check(f.read() == "second version\n", "vow get of the current output")
        again = ask(a, "gc")
        check(again["removed"] == [], f"a second gc removed {again['removed']}")
        # The agent goes on: a third version runs and is kept.
        write(data, "third version\n")
        wait_until("the third result",
                   lambda: (lambda o: o if o and o not in (first, second) else None)(output()),
                   60, 0.1)
    finally:
        mesh.cleanup()
        subprocess.run(["rm", "-rf", root])


def gc_metric(agent, outcome):
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.http_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f'vow_gc_passes_total{{outcome="{outcome}"}} '):
                return float(line.split()[-1])
    raise TestFailure(f"no vow_gc_passes_total{{outcome=\"{outcome}\"}} in /metrics")


def gc_periodic():
    """Two agents with `gc_interval = "1s"`: once a pass finds nothing to do, the next
    ones are skipped while nothing changes (an idle agent does not walk its store every
    interval); a new source version makes them run again, and they remove the old
    version and its output by themselves."""
    root, data, mesh = copy_mesh("vow-gc-periodic")
    try:
        a = mesh.add("a", [("keep/copy", 1)], sources=[("keep/data", data, True)])
        b = mesh.add("b", [("keep/copy", 1)])
        for x in (a, b):
            x.http_port = free_port()
            x.agent_lines.append('gc_interval = "1s"')
        mesh.start()

        def output():
            return copy_output(a)
        first = wait_until("the first result", output, 60, 0.1)
        for x in (a, b):
            wait_until(f"{x.name}: periodic passes skipped", lambda: gc_metric(x, "skipped") >= 2,
                       60, 0.2)
        made = {x.name: gc_metric(x, "made") for x in (a, b)}
        skipped = {x.name: gc_metric(x, "skipped") for x in (a, b)}
        time.sleep(4)
        for x in (a, b):
            check(gc_metric(x, "made") == made[x.name],
                  f"{x.name} made {gc_metric(x, 'made') - made[x.name]:.0f} passes while idle")
            check(gc_metric(x, "skipped") >= skipped[x.name] + 2,
                  f"{x.name} skipped {gc_metric(x, 'skipped') - skipped[x.name]:.0f} passes in 4 s")
        check(stored(a, first), "the current version is gone from the store")
        write(data, "second version\n")
        second = wait_until("the second result",
                            lambda: (lambda o: o if o and o != first else None)(output()),
                            60, 0.1)
        wait_until("the old version collected by the periodic passes",
                   lambda: not stored(a, first), 60, 0.2)
        check(stored(a, second), "the current version is gone from the store")
        check(gc_metric(a, "made") > made["a"], "no pass made after the source changed")
    finally:
        mesh.cleanup()
        subprocess.run(["rm", "-rf", root])


def gc_replicas():
    """Three agents all hold a canonical output; `vow gc` on each leaves `replicas` (2)
    copies on the mesh, and the output is still served."""
    root = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"vow-gc-replicas-{os.getpid()}")
    os.makedirs(root, exist_ok=True)
    pipe = write(os.path.join(root, "upper.toml"), UPPER)
    data = write(os.path.join(root, "data.txt"), "some words\n")
    mesh = Mesh(VOW, VOWD, [pipe])
    try:
        a = mesh.add("a", [("upper/up", 1)], sources=[("upper/data", data, False)])
        b = mesh.add("b", [])
        c = mesh.add("c", [])
        mesh.start()

        def output(ag):
            for p in ag.status()["pipelines"]:
                for s in p["stages"]:
                    if s["name"] == "up" and s.get("results"):
                        return s["results"][0]["outputs"]["up"]
            return None
        out = wait_until("the result", lambda: output(a), 60, 0.1)
        # The others know of it too before they are asked for it (a may finish before
        # they have even heard from it).
        for ag in (b, c):
            wait_until(f"{ag.name} to know the result", lambda: output(ag) == out, 30, 0.1)
        # Every agent takes a copy (vow get stores it in the asking agent's store).
        for ag in (a, b, c):
            ag.vow("get", out, "-o", os.path.join(root, "got-" + ag.name))
        wait_until("three copies", lambda: all(stored(ag, out) for ag in (a, b, c)), 30, 0.1)
        # Each agent hears the others' holdings: a heartbeat (100 ms) shows a new holdings
        # version, a Have answers; a few heartbeats are plenty.
        time.sleep(2)
        for ag in (a, b, c):
            ask(ag, "gc")
        holders = [ag.name for ag in (a, b, c) if stored(ag, out)]
        check(len(holders) == 2, f"after gc on every agent the output is held by {holders}, "
              "not by replicas = 2 agents")
        for ag in (a, b, c):
            got = os.path.join(root, "again-" + ag.name)
            ag.vow("get", out, "-o", got)
            with open(got) as f:
                check(f.read() == "SOME WORDS\n", f"vow get on {ag.name} after gc")
    finally:
        mesh.cleanup()
        subprocess.run(["rm", "-rf", root])


def kinds(agent):
    """Rows of the agent's ledger file by statement kind (docs/storage.md)."""
    db = sqlite3.connect(f"file:{os.path.join(agent.state, 'vow.db')}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT kind, count(*) FROM statements GROUP BY kind").fetchall())
    finally:
        db.close()


CLAIM, RESULT, ACCEPT, HORIZON = 3, 5, 6, 9


def horizon():
    """Three agents run 150 shards with a horizon every 100 statements, some of them
    checkpoints: each applies horizons, and the horizon statements before the newest
    checkpoint leave every ledger file; the claims of finished jobs leave while every
    result stays (and no agent made an accept: results name their inputs' producers); the stage stays done through a restart with nothing run again;
    a fourth agent started afterwards catches up from what its peers kept and shows the
    same; `vow verify` passes on each."""
    n = 150
    root, pipe, items = foreach_files("vow-horizon", n)
    mesh = Mesh(VOW, VOWD, [pipe])
    try:
        a = mesh.add("a", [("many/noop", 2)], sources=[("many/items", items, True)])
        b = mesh.add("b", [("many/noop", 2)])
        c = mesh.add("c", [("many/noop", 2)])
        d = mesh.add("d", [])
        for ag in mesh.agents:
            ag.agent_lines.append("horizon_every = 100")
            # A checkpoint every few horizons (docs/storage.md, "Checkpoints").
            ag.agent_lines.append("checkpoint_percent = 10")
            others = [f"{x.id}@{x.endpoint}" for x in mesh.agents if x is not ag]
            ag.write_config(others)
        for ag in (a, b, c):
            ag.start()
        done = lambda ag: stage_counts(ag.status(), "many").get("noop", {}).get("done") == n  # noqa: E731,E501
        for ag in (a, b, c):
            wait_until(f"{n} jobs done on {ag.name}", lambda: done(ag), 120, 0.2)

        def applied(ag):
            return sum(1 for line in open(ag.log_path, errors="replace")
                       if "horizon" in line and "applied" in line)
        # The last jobs are compacted by a horizon once 100 more statements follow them;
        # the first ones have been already. Every agent applies the same horizons.
        for ag in (a, b, c):
            wait_until(f"a horizon applied on {ag.name}", lambda: applied(ag) >= 1, 60, 0.2)
        # A fast run may make its first horizon, a checkpoint, only once most jobs are
        # done: nothing is before it to retire, and fewer than 100 statements follow its
        # cut for a next one. More items (new versions of the source, which a watches)
        # make the next horizons.
        for _ in range(3):
            if min(applied(ag) for ag in (a, b, c)) >= 2:
                break
            for i in range(n, n + 60):
                write(os.path.join(items, f"item-{i:04d}"), f"{i}\n")
            n += 60
            for ag in (a, b, c):
                wait_until(f"{n} jobs done on {ag.name}", lambda: done(ag), 120, 0.2)
            try:
                wait_until("a second horizon applied everywhere",
                           lambda: min(applied(ag) for ag in (a, b, c)) >= 2, 10, 0.2)
            except TestFailure:
                pass  # more items, once more
        # Checkpoints: the horizon statements before the newest one leave every ledger file.
        def checkpoints(ag):
            return sum(1 for line in open(ag.log_path, errors="replace")
                       if "(a checkpoint) applied" in line)
        for ag in (a, b, c):
            wait_until(f"a checkpoint applied on {ag.name}", lambda: checkpoints(ag) >= 1, 60, 0.2)
        for ag in (a, b, c):
            # Peers' results reach an agent's ledger file within 100 ms of their arrival
            # (docs/agent.md, "Peers' statements, committed in batches"): "done" in the
            # status may come first.
            wait_until(f"{n} results in {ag.name}'s ledger file",
                       lambda: kinds(ag).get(RESULT, 0) >= n, 10, 0.05)
            # The first horizon may itself be the checkpoint, with nothing before it to
            # retire: the next ones (the last jobs' statements) may still be on their way.
            try:
                wait_until(f"horizon statements retired from {ag.name}'s ledger file",
                           lambda: kinds(ag).get(HORIZON, 0) < 3 * applied(ag), 30, 0.2)
            except TestFailure:
                pass  # said below, with the counts
            k = kinds(ag)
            check(k.get(HORIZON, 0) < 3 * applied(ag),
                  f"{ag.name}'s ledger file holds {k.get(HORIZON, 0)} horizon statements after "
                  f"{applied(ag)} horizons applied (a proposal and two endorsements each): "
                  "none retired by a checkpoint")
            check(k.get(RESULT, 0) >= n, f"{ag.name} keeps {k.get(RESULT, 0)} results of {n}")
            check(k.get(CLAIM, 0) < n // 2 and k.get(ACCEPT, 0) == 0,
                  f"{ag.name}'s ledger file still holds {k.get(CLAIM, 0)} claims and "
                  f"{k.get(ACCEPT, 0)} accepts for {n} finished jobs: {k}")
        # A restart reads back the compacted ledger: still done, nothing run again.
        runs = lambda ag: sum(1 for line in open(ag.log_path, errors="replace") if " started " in line)  # noqa: E731,E501
        before = runs(a)
        a.kill(signal.SIGTERM)
        a.start()
        wait_until("a done again after its restart", lambda: done(a), 60, 0.2)
        time.sleep(1)
        check(runs(a) == before, f"a started {runs(a) - before} job(s) again after a restart")
        check(ask(a, "jobs", "--state", "running")["jobs"] == [], "running jobs after a restart")
        # A fresh agent joins: it gets what its peers kept and the horizons, and agrees.
        d.start()
        wait_until(f"{n} jobs done on d", lambda: done(d), 60, 0.2)
        wait_until("a horizon applied on d", lambda: applied(d) >= 1, 30, 0.2)
        k = kinds(d)
        check(k.get(CLAIM, 0) < n // 2, f"d fetched {k.get(CLAIM, 0)} claims of finished jobs")
        # It started from the newest checkpoint: the horizons before it were gone.
        check(checkpoints(d) >= 1, "d applied no checkpoint")
        # It took the results the horizons settled on their word (the digest of each
        # result's signed form), not by checking each signature again.
        stats = ask(d, "status")["statements"]
        check(stats["vouched"] > 0, f"d checked every signature again: {stats}")
        for ag in (a, b, c, d):
            v = ag.vow("verify", "--json", check_rc=False)
            check(v.returncode == 0, f"vow verify on {ag.name}: rc {v.returncode}: "
                  f"{v.stdout[-2000:]} {v.stderr[-500:]}")
    finally:
        mesh.cleanup()
        subprocess.run(["rm", "-rf", root])


def superseded():
    """Three agents run 40 shards, then every input file changes three times (four
    generations of 40 jobs): with horizons every 60 statements, each agent's ledger file
    ends with the results of about one generation, not four; `vow jobs` lists about the
    current jobs; lineage of a current result is whole; a restart runs nothing again;
    `vow verify` passes on each."""
    n, generations = 40, 4
    root, pipe, items = foreach_files("vow-superseded", n)
    mesh = Mesh(VOW, VOWD, [pipe])
    try:
        a = mesh.add("a", [("many/noop", 2)], sources=[("many/items", items, True)])
        b = mesh.add("b", [("many/noop", 2)])
        c = mesh.add("c", [("many/noop", 2)])
        for ag in mesh.agents:
            ag.agent_lines.append("horizon_every = 60")
        mesh.start()
        runs = lambda ag: sum(1 for line in open(ag.log_path, errors="replace") if "started job" in line)  # noqa: E731,E501

        def done_ids(ag):
            return {j["id"] for j in ask(ag, "jobs", "--stage", "noop", "--state", "done",
                                         "--limit", "1000")["jobs"]}
        previous = set()
        for g in range(generations):
            if g > 0:
                for i in range(n):
                    write(os.path.join(items, f"item-{i:04d}"), f"{i} generation {g}\n")
            # Every input changed, so every job of the generation is new.
            for ag in (a, b, c):
                wait_until(f"generation {g + 1} done on {ag.name}", lambda: (
                    lambda ids: len(ids) == n and not ids & previous)(done_ids(ag)), 120, 0.2)
            previous = done_ids(a)
        # Horizons after the last generation retire the three before it on every agent.
        # They come by the count of statements (docs/storage.md, "Superseded jobs"): the
        # generation just before the last goes with the first horizon whose cut follows
        # one past the change, so a mesh that falls quiet right after a change holds it
        # until more work comes. More work comes here, if need be: a new item at a time
        # (a job each; the current ones stay current), until every ledger file is down.
        extra, added_at = 0, time.time()
        deadline = time.time() + 120

        def down():
            return all(kinds(ag).get(RESULT, 0) < 2 * n for ag in (a, b, c))
        while not down():
            check(time.time() < deadline,
                  f"ledger files down to about one generation of results after {extra} new "
                  f"items: {[kinds(ag).get(RESULT, 0) for ag in (a, b, c)]} results")
            if extra < n // 2 and time.time() - added_at > 1.0:
                write(os.path.join(items, f"item-{n + extra:04d}"), f"{n + extra} extra\n")
                extra, added_at = extra + 1, time.time()
            time.sleep(0.2)
        current = n + extra
        for ag in (a, b, c):
            wait_until(f"{current} jobs done on {ag.name}", lambda: stage_counts(
                ag.status(), "many").get("noop", {}).get("done") == current, 60, 0.2)
        for ag in (a, b, c):
            listed = ag.vow("jobs", "--json").stdout
            jobs = json.loads(listed)["jobs"]
            check(len(jobs) < 2 * n, f"{ag.name} lists {len(jobs)} jobs for {n} current ones")
        # Lineage of a current result is whole: it names its source version.
        some = ask(a, "jobs", "--stage", "noop", "--state", "done", "--limit", "1")["jobs"][0]
        lin = a.vow("lineage", some["id"], check_rc=False)
        check(lin.returncode == 0 and "items" in lin.stdout,
              f"vow lineage {some['id']}: rc {lin.returncode}: {lin.stdout[-1000:]} "
              f"{lin.stderr[-500:]}")
        before = sum(runs(ag) for ag in (a, b, c))
        check(before < n * generations * 3 // 2, f"{before} runs for {n * generations} jobs")
        b.kill(signal.SIGTERM)
        b.start()
        wait_until("b done again after its restart", lambda: stage_counts(
            b.status(), "many").get("noop", {}).get("done") == current, 60, 0.2)
        time.sleep(1)
        check(sum(runs(ag) for ag in (a, b, c)) == before, "jobs ran again after a restart")
        for ag in (a, b, c):
            v = ag.vow("verify", "--json", check_rc=False)
            check(v.returncode == 0, f"vow verify on {ag.name}: rc {v.returncode}: "
                  f"{v.stdout[-2000:]} {v.stderr[-500:]}")
    finally:
        mesh.cleanup()
        subprocess.run(["rm", "-rf", root])


if __name__ == "__main__":
    run_scenario({"paging": paging, "gc": gc, "gc-periodic": gc_periodic,
                  "gc-replicas": gc_replicas, "horizon": horizon, "superseded": superseded},
                 sys.argv[3])
