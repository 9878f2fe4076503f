#!/usr/bin/python3
"""The web view (agent/web.h) on a real mesh: three vowd processes run the wordcount
example and a pipeline whose one job waits for a gate file and then fails.

Scenarios:
  api     the JSON the page reads, checked against `vow status` / `vow job` (no browser);
          the token (401 without it, the cookie, /metrics and the probes open), the web
          view refused beyond loopback without a token, and a bad token file refused at
          start with its FILE:LINE:COLUMN.
  browser headless Chromium over its DevTools pipe (no other tool): every stage name and
          state on the pipeline page, a screenshot of it saved in OUTDIR, a job followed to
          its log tail, a result to its lineage and "Verify"; the gated job, failing while
          the page is open, shows as failed within 2 s of the agent knowing it, without a
          reload. Exits 77 (skipped) when no Chromium is installed or it cannot start.

usage: web_test.py VOW VOWD SOURCE_ROOT OUTDIR SCENARIO
"""
import base64
import fcntl
import http.client
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import Mesh, TestFailure, check, free_port, run_scenario, wait_until  # noqa: E402
from mesh_test import make_corpus  # noqa: E402

VOW, VOWD, ROOT, OUTDIR = (os.path.abspath(a) for a in sys.argv[1:5])
WORDCOUNT = os.path.join(ROOT, "examples", "wordcount", "wordcount.toml")
SKIP = 77
TOKEN = "dGhlLXdlYi12aWV3LXRva2VuLWZvci10ZXN0cw=="
STAGES = ["split", "count", "merge", "top"]

GATE_PIPELINE = """[pipeline]
name = "gate"

[[source]]
name = "data"

# One job per file of data: a1 and a2 copy theirs, z9 waits for the gate file, then fails.
[[stage]]
name = "hold"
inputs = ["data"]
foreach = "data"
outputs = ["out"]
run = '''
if [ "$VOW_SHARD" = z9 ]; then
  while [ ! -e "$GATE" ]; do sleep 0.05; done
  echo "gate opened: failing on purpose" >&2
  exit 7
fi
cp "$VOW_IN_data" "$VOW_OUT_out"
'''
env = {{ GATE = "{gate}" }}
"""


# ---- HTTP ----

def request(port, path, headers=None, method="GET"):
    """(status, headers, body as text) of one request to 127.0.0.1:PORT."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        c.close()


def get_json(port, path, expect=200, headers=None):
    status, hdrs, body = request(port, path, headers)
    check(status == expect, f"GET {path}: status {status}, expected {expect}: {body[:300]}")
    check(hdrs.get("content-type", "").startswith("application/json"),
          f"GET {path}: content type {hdrs.get('content-type')}")
    return json.loads(body)


def q(**params):
    return urllib.parse.urlencode(params)


# ---- the mesh ----

def start_mesh():
    # Not under /tmp: the gated job, in the sandbox, has a /tmp of its own (docs/sandbox.md).
    root = tempfile.mkdtemp(prefix="vow-web-files-", dir="/var/tmp")
    gate = os.path.join(root, "gate")
    gate_toml = os.path.join(root, "gate.toml")
    with open(gate_toml, "w") as f:
        f.write(GATE_PIPELINE.format(gate=gate))
    mesh = Mesh(VOW, VOWD, [WORDCOUNT, gate_toml], prefix="vow-web-")
    mesh.files = root
    mesh.gate = gate
    corpus = os.path.join(mesh.root, "corpus")
    make_corpus(corpus)
    data = os.path.join(mesh.root, "data")
    os.makedirs(data)
    for name in ("a1", "a2", "z9"):
        with open(os.path.join(data, name), "w") as f:
            f.write(name + "\n")
    wc = [("wordcount/split", 1), ("wordcount/count", 2), ("wordcount/merge", 1),
          ("wordcount/top", 1)]
    a = mesh.add("a", wc + [("gate/hold", 3)],
                 sources=[("wordcount/corpus", corpus, False), ("gate/data", data, False)])
    b = mesh.add("b", wc)
    c = mesh.add("c", [])
    a.http_port = free_port()   # loopback, no token: open to the host
    b.http_port = free_port()   # every address, with a token
    c.http_port = free_port()   # every address, no token: the web view is off
    token_file = os.path.join(mesh.root, "web.token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token_file, 0o600)

    def rebind(agent, extra):
        write = agent.write_config

        def write_config(peers):
            write(peers)
            with open(agent.config) as f:
                text = f.read()
            text = text.replace(f'http = "127.0.0.1:{agent.http_port}"',
                                f'http = "0.0.0.0:{agent.http_port}"' + extra)
            with open(agent.config, "w") as f:
                f.write(text)
        agent.write_config = write_config
    rebind(b, f'\nhttp_token_file = "{token_file}"')
    rebind(c, "")
    mesh.start()
    p = a.vow("wait", "wordcount", "--timeout", "120s", check_rc=False, timeout=150)
    check(p.returncode == 0, f"vow wait wordcount: {p.returncode} {p.stderr}")
    wait_until("the gated job to run, the others done", lambda: running(a), 30)
    return mesh, a, b, c


def running(agent):
    """a1 and a2 done, z9 waiting for the gate."""
    jobs = json.loads(agent.vow("jobs", "--pipeline", "gate", "--json").stdout)["jobs"]
    return sorted(j["state"] for j in jobs) == ["done", "done", "running"]


def finish(mesh):
    mesh.cleanup()
    shutil.rmtree(mesh.files, ignore_errors=True)


# ---- scenario: api ----

def scenario_api():
    mesh, a, b, c = start_mesh()
    try:
        check_api(a, mesh)
        check_token(b)
        check_beyond_loopback_without_token(c)
        check_bad_token_file(mesh)
    finally:
        finish(mesh)


def check_api(a, mesh):
    port = a.http_port
    status = a.status()
    pl = get_json(port, "/api/pipelines")
    check(pl["agent"]["name"] == "a", f"agent: {pl['agent']}")
    names = sorted(p["name"] for p in pl["pipelines"])
    check(names == ["gate", "wordcount"], f"pipelines: {names}")
    wc = [p for p in pl["pipelines"] if p["name"] == "wordcount"][0]
    check([s["name"] for s in wc["stages"]] == STAGES, f"stages in order: {wc['stages']}")
    check(wc["sources"] == [{"name": "corpus", "providers": ["a"]}], f"sources: {wc['sources']}")
    by_name = {s["name"]: s for s in wc["stages"]}
    # The graph's edges: each stage's inputs.
    check([(i["from"], i["source"], i["foreach"]) for i in by_name["count"]["inputs"]] ==
          [("split", False, True)], f"count inputs: {by_name['count']['inputs']}")
    check(by_name["split"]["inputs"][0]["from"] == "corpus" and by_name["split"]["inputs"][0]["source"],
          f"split inputs: {by_name['split']['inputs']}")
    # Counts and states agree with vow status.
    st = {s["name"]: s for p in status["pipelines"] if p["name"] == "wordcount" for s in p["stages"]}
    for name in STAGES:
        check(by_name[name]["state"] == "done", f"{name}: {by_name[name]['state']}")
        for k in ("ready", "running", "done", "failed"):
            check(by_name[name]["jobs"][k] == st[name]["jobs"][k],
                  f"{name} {k}: {by_name[name]['jobs'][k]} vs vow status {st[name]['jobs'][k]}")
    check(by_name["count"]["total"] == 8, f"count total: {by_name['count']['total']}")
    check(sorted(x["name"] for x in by_name["count"]["promised_by"]) == ["a", "b"],
          f"count promised by: {by_name['count']['promised_by']}")
    gate = [p for p in pl["pipelines"] if p["name"] == "gate"][0]
    hold = gate["stages"][0]
    check(hold["state"] == "running" and hold["jobs"]["running"] == 1 and
          hold["jobs"]["done"] == 2 and hold["total"] == 3, f"gate/hold: {hold}")

    # A stage's jobs, a page at a time.
    d = get_json(port, "/api/stage?" + q(pipeline="wordcount", stage="count"))
    check(d["total"] == 8 and len(d["jobs"]) == 8 and d["counts"]["done"] == 8, f"count jobs: {d}")
    vow_jobs = {j["id"]: j for j in json.loads(a.vow("jobs", "--stage", "count", "--json").stdout)["jobs"]}
    for j in d["jobs"]:
        v = vow_jobs[j["id"]]
        check(j["state"] == "done" and j["agent"] == v["executor"]["name"] and
              j["attempts"] == v["attempts"] and j["duration_ms"] == v["duration_ms"] and
              j["shard"] == v["shard"] and j["epoch"] >= 1,
              f"job {j} against vow jobs {v}")
    check([j["shard"] for j in d["jobs"]] == sorted(j["shard"] for j in d["jobs"]),
          "jobs of one state in shard order")
    check(sorted((x["name"], x["liveness"], x["capacity"]) for x in d["promised_by"]) ==
          [("a", "self", 2), ("b", "alive", 2)], f"count promised by: {d['promised_by']}")
    page = get_json(port, "/api/stage?" + q(pipeline="wordcount", stage="count", offset=6, limit=5))
    check(page["total"] == 8 and [j["id"] for j in page["jobs"]] == [j["id"] for j in d["jobs"][6:]],
          f"page 6..: {page['jobs']}")
    none = get_json(port, "/api/stage?" + q(pipeline="wordcount", stage="count", state="failed"))
    check(none["jobs"] == [] and none["total"] == 0, f"no failed count job: {none}")
    for path, expect, text in [
            ("/api/stage?" + q(pipeline="wordcount", stage="nosuch"), 404, "no stage wordcount/nosuch"),
            ("/api/stage?" + q(pipeline="wordcount"), 400, "missing query parameter 'stage'"),
            ("/api/stage?" + q(pipeline="wordcount", stage="count", limit=0), 400, "'limit' must be"),
            ("/api/stage?" + q(pipeline="wordcount", stage="count", offset="x"), 400, "'offset'"),
            ("/api/stage?" + q(pipeline="wordcount", stage="count", state="lost"), 400,
             "unknown state 'lost'"),
            ("/api/job?id=zz", 400, "is not a job id"),
            ("/api/job?id=abcdef0123", 404, "no job abcdef0123"),
            ("/api/lineage?ref=wordcount/nosuch.x", 404, "no stage wordcount/nosuch"),
            ("/api/verify", 400, "missing query parameter 'ref'")]:
        err = get_json(port, path, expect)
        check(text in err["error"], f"{path}: {err}")
    status404, _, _ = request(port, "/nosuch.js")
    check(status404 == 404, f"/nosuch.js: {status404}")

    # One job with its log tail, as vow job shows it.
    top = get_json(port, "/api/stage?" + q(pipeline="wordcount", stage="top"))["jobs"][0]
    job = get_json(port, "/api/job?id=" + top["id"])
    cli = json.loads(a.vow("job", top["id"], "--json").stdout)
    check(job["id"] == cli["id"] and job["logs"] == cli["logs"] and job["state"] == "done",
          f"job: {job.get('logs')} vs {cli.get('logs')}")
    # A result's lineage, and its verification.
    lin = get_json(port, "/api/lineage?" + q(ref="wordcount/top.report"))
    kinds = sorted(s["kind"] for s in lin["steps"])
    check(kinds.count("source") == 1 and kinds.count("job") == 11, f"lineage steps: {kinds}")
    v = get_json(port, "/api/verify?" + q(ref="wordcount/top.report"))
    check(v["ok"] is True and v["problems"] == [], f"verify: {v}")
    check(v["steps"] == 12 and v["signatures"] == 12 and v["attestations"] == 12 and
          v["links"] == len(lin["edges"]), f"verify counts: {v}")

    # The mesh: agents, liveness, load, promises, rejected messages.
    m = get_json(port, "/api/mesh")
    check(sorted(x["name"] for x in m["agents"]) == ["a", "b", "c"], f"agents: {m['agents']}")
    check(all(x["alive"] for x in m["agents"]), f"liveness: {m['agents']}")
    check(sorted(x["name"] for x in m["promises"]) == ["a", "b", "c"], f"promises: {m['promises']}")
    check("bad_signature" in m["rejected"] and "untrusted_handshake" in m["rejected"],
          f"rejected: {m['rejected']}")

    # The snapshot (/metrics, /api/status): an agent with nothing changing makes it again
    # only every 5 s, not every 500 ms (its cost grew with the jobs it shows): 6 in 3 s
    # before; 2 allows one change (a peer's late heartbeat) beside the 5 s refresh.
    def snapshots():
        _, _, text = request(port, "/metrics")
        for line in text.splitlines():
            if line.startswith("vow_http_snapshots_total "):
                return float(line.split()[1])
        raise TestFailure("/metrics has no vow_http_snapshots_total")
    n0 = snapshots()
    time.sleep(3)
    n1 = snapshots()
    check(n1 - n0 <= 2, f"an idle agent made {n1 - n0:.0f} snapshots in 3 s")

    # A job fails: failed first in its stage, with its exit status, error and log tail.
    with open(mesh.gate, "w"):
        pass
    wait_until("gate/hold to fail", lambda: get_json(
        port, "/api/stage?" + q(pipeline="gate", stage="hold"))["counts"]["failed"] == 1, 30)

    # The snapshot shows the change without waiting for its 5 s.
    def snapshot_failed():
        st = get_json(port, "/api/status")
        return [s["jobs"]["failed"] for p in st["pipelines"] if p["name"] == "gate"
                for s in p["stages"]] == [1]
    wait_until("the snapshot to show the failed job", snapshot_failed, 4)
    d = get_json(port, "/api/stage?" + q(pipeline="gate", stage="hold"))
    check([(j["shard"], j["state"]) for j in d["jobs"]] ==
          [("z9", "failed"), ("a1", "done"), ("a2", "done")], f"failed first: {d['jobs']}")
    failed = d["jobs"][0]
    check(failed["exit_status"] == 7 and "exit status 7" in failed["error"] and
          failed["agent"] == "a" and failed["attempts"] == 1, f"the failed job: {failed}")
    job = get_json(port, "/api/job?id=" + failed["id"])
    check("gate opened: failing on purpose" in job["logs"].get("stderr", ""), f"log: {job['logs']}")
    pl = get_json(port, "/api/pipelines")
    hold = [p for p in pl["pipelines"] if p["name"] == "gate"][0]["stages"][0]
    check(hold["state"] == "failed" and hold["jobs"]["failed"] == 1, f"gate/hold: {hold}")

    # The page and its files.
    s, h, body = request(port, "/")
    check(s == 200 and h["content-type"].startswith("text/html") and 'src="app.js"' in body,
          f"/: {s} {h.get('content-type')}")
    check("default-src 'self'" in h.get("content-security-policy", ""), f"CSP: {h}")
    s, h, body = request(port, "/app.js")
    check(s == 200 and "javascript" in h["content-type"] and 'api("pipelines")' in body, f"/app.js: {s}")


def check_token(b):
    port = b.http_port
    for path in ("/api/pipelines", "/", "/api/status"):
        s, h, body = request(port, path)
        check(s == 401, f"{path} without the token: {s}")
    err = get_json(port, "/api/pipelines", 401)
    check("asks for a token" in err["error"], f"401 says why: {err}")
    get_json(port, "/api/pipelines", 401, {"Authorization": "Bearer " + TOKEN[:-2] + "xx"})
    d = get_json(port, "/api/pipelines", 200, {"Authorization": "Bearer " + TOKEN})
    check(d["agent"]["name"] == "b", f"with the token: {d['agent']}")
    # ?token= on first load: a cookie, and the same page without the token.
    s, h, _ = request(port, "/?" + q(token=TOKEN))
    check(s == 303 and h.get("location") == "/", f"?token=: {s} {h.get('location')}")
    cookie = h.get("set-cookie", "")
    check(cookie.startswith("vow_token=" + TOKEN + ";") and "HttpOnly" in cookie, f"cookie: {cookie}")
    s, _, body = request(port, "/", {"Cookie": "other=1; vow_token=" + TOKEN})
    check(s == 200 and "app.js" in body, f"/ with the cookie: {s}")
    get_json(port, "/api/mesh", 200, {"Cookie": "vow_token=" + TOKEN})
    s, _, _ = request(port, "/?" + q(token="wrong-token-wrong-token"))
    check(s == 401, f"a wrong ?token=: {s}")
    # Monitoring stays open.
    for path in ("/metrics", "/healthz", "/readyz"):
        s, _, _ = request(port, path)
        check(s == 200, f"{path} without the token: {s}")


def check_beyond_loopback_without_token(c):
    port = c.http_port
    err = get_json(port, "/api/pipelines", 403)
    check("http_token_file" in err["error"], f"403 says why: {err}")
    s, _, body = request(port, "/")
    check(s == 403 and "http_token_file" in body, f"/ beyond loopback without a token: {s}")
    for path in ("/metrics", "/healthz", "/api/status"):
        s, _, _ = request(port, path)
        check(s == 200, f"{path}, served as before: {s}")


def check_bad_token_file(mesh):
    """vowd refuses to start on a token file it cannot use, naming where it was set."""
    bad = os.path.join(mesh.root, "agent-bad.toml")
    short = os.path.join(mesh.root, "short.token")
    with open(short, "w") as f:
        f.write("abc\n")
    for path, message in [(os.path.join(mesh.root, "missing.token"),
                           "cannot read: No such file or directory"),
                          (short, "the token must be 16-4096 characters, not 3")]:
        with open(bad, "w") as f:
            f.write("[agent]\nname = \"bad\"\nlisten = \"tcp://127.0.0.1:%d\"\n"
                    "state_dir = \"%s\"\nhttp = \"127.0.0.1:%d\"\nhttp_token_file = \"%s\"\n"
                    % (free_port(), os.path.join(mesh.root, "state-bad"), free_port(), path))
        p = subprocess.run([VOWD, "--config", bad], capture_output=True, text=True, timeout=30)
        want = f"{bad}:6:19: http_token_file '{path}': {message}"
        check(p.returncode != 0 and want in p.stderr, f"vowd with a bad token file: rc "
              f"{p.returncode}, wanted {want!r} in: {p.stderr.strip()}")


# ---- headless Chromium over the DevTools pipe ----

def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Chromium with --remote-debugging-pipe: DevTools messages, NUL-separated JSON, on
    file descriptors 3 (to it) and 4 (from it)."""

    def __init__(self, exe, profile):
        self.log = open(os.path.join(profile, "chromium.log"), "w")
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()
        # Out of the way of 3 and 4, which the shell below makes them.
        to_r, from_w = (self._high(fd) for fd in (to_r, from_w))
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-background-networking",
                "--remote-debugging-pipe", f"--user-data-dir={profile}",
                "--window-size=1400,1000", "about:blank"]
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-', "bash", *args],
            pass_fds=(to_r, from_w), stdout=subprocess.DEVNULL, stderr=self.log)
        os.close(to_r)
        os.close(from_w)
        self.buf = b""
        self.next_id = 0
        self.session = None

    @staticmethod
    def _high(fd):
        high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return high

    def call(self, method, params=None, timeout=20, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                m = json.loads(raw)
                if m.get("id") == self.next_id:
                    if "error" in m:
                        raise TestFailure(f"DevTools {method}: {m['error']}")
                    return m.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure(f"DevTools {method}: no answer in {timeout}s")
            r, _, _ = select.select([self.from_r], [], [], left)
            if r:
                chunk = os.read(self.from_r, 1 << 20)
                if not chunk:
                    raise TestFailure("Chromium closed its DevTools pipe")
                self.buf += chunk

    def open(self, url):
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        self.call("Page.navigate", {"url": url})

    def js(self, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise TestFailure(f"page script {expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, what, expression, timeout=15):
        return wait_until(what, lambda: self.js(expression), timeout, 0.05)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout=5)
        except TestFailure:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_w)
        os.close(self.from_r)


def scenario_browser():
    exe = find_chromium()
    if not exe:
        print("skip: no chromium (apt-get install chromium)")
        sys.exit(SKIP)
    profile = tempfile.mkdtemp(prefix="vow-web-chromium-")
    browser = Browser(exe, profile)
    try:
        browser.call("Browser.getVersion", session=False, timeout=30)
    except TestFailure as e:
        browser.proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
        print(f"skip: chromium cannot start: {e}")
        sys.exit(SKIP)
    mesh, a, b, c = start_mesh()
    try:
        check_pages(browser, a, mesh)
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
        finish(mesh)


def check_pages(browser, a, mesh):
    port = a.http_port
    api = get_json(port, "/api/pipelines")
    browser.open(f"http://127.0.0.1:{port}/#/")
    # Every stage of every pipeline, named, in the state the agent reports.
    expected = {(p["name"], s["name"]): s["state"] for p in api["pipelines"] for s in p["stages"]}
    shown = lambda: browser.js(  # noqa: E731
        "Array.from(document.querySelectorAll('section.pipeline g.node[data-stage]'))"
        ".map(g => [g.closest('section').dataset.pipeline, g.dataset.stage, g.dataset.state,"
        " Array.from(g.querySelectorAll('text')).map(t => t.textContent).join(' ')])")
    nodes = wait_until("the pipeline graphs", lambda: len(shown()) == len(expected) and shown(), 15)
    for pipeline, stage, state, text in nodes:
        check(expected.get((pipeline, stage)) == state,
              f"{pipeline}/{stage} drawn {state}, the agent says {expected.get((pipeline, stage))}")
        check(text.startswith(stage) and state in text, f"{pipeline}/{stage} node reads {text!r}")
    check(sorted((p, s) for p, s, _, _ in nodes) == sorted(expected),
          f"stages drawn {nodes} vs {sorted(expected)}")
    rows = browser.js("Array.from(document.querySelectorAll('table.stages tr[data-stage]'))"
                      ".map(r => [r.dataset.stage, r.dataset.state, r.querySelector("
                      "'[data-count=done]').textContent])")
    check(["count", "done", "8"] in rows, f"the stage table: {rows}")
    # The gated job fails while the page is open: shown within 2 s, without a reload.
    load_id = browser.js("document.documentElement.dataset.loadId")
    hold = "document.querySelector('g.node[data-stage=hold]').dataset.state"
    check(browser.js(hold) == "running", f"gate/hold before the gate opens: {browser.js(hold)}")
    with open(mesh.gate, "w"):
        pass
    opened = time.monotonic()
    known = shown_at = None
    while time.monotonic() - opened < 30 and shown_at is None:
        if known is None:
            st = get_json(port, "/api/stage?" + q(pipeline="gate", stage="hold"))
            if st["counts"]["failed"] == 1:
                known = time.monotonic()
        if browser.js(hold) == "failed":
            shown_at = time.monotonic()
        time.sleep(0.05)
    check(shown_at is not None, "gate/hold never shown failed")
    known = known or shown_at
    print(f"failure: agent knew {known - opened:.2f}s after the gate opened; "
          f"the page showed it {shown_at - known:.2f}s later")
    check(shown_at - known <= 2.0, f"the page showed the failure {shown_at - known:.2f}s after "
                                   "the agent knew it")
    check(browser.js("document.documentElement.dataset.loadId") == load_id,
          "the page was reloaded")
    check(int(browser.js("document.getElementById('main').dataset.updates")) > 1,
          "the page never redrew")
    # The pipeline page as it is now (the picture in docs/cli.md).
    os.makedirs(OUTDIR, exist_ok=True)
    shot = os.path.join(OUTDIR, "web-pipelines.png")
    browser.screenshot(shot)
    with open(shot, "rb") as f:
        check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{shot} is no PNG")
    print(f"screenshot: {shot}")

    # Follow the failed job to its log tail: the stage, its jobs failed first, the job.
    browser.js("document.querySelector('g.node[data-stage=hold]')"
               ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
    first = browser.wait("the stage's jobs", "(() => { const r = document.querySelector("
                         "'#stage table.jobs tr[data-job]'); return r && [r.dataset.job, "
                         "r.dataset.state]; })()")
    check(first[1] == "failed", f"first job row: {first}")
    promised = browser.js("document.getElementById('promised').textContent")
    check(promised == "Promised by: a (self, running 0 jobs, capacity 3 here)",
          f"who promises gate/hold: {promised!r}")
    browser.js("document.querySelector('#stage tr[data-job] a').click()")
    stderr = browser.wait("the job's log tail", "(() => { const p = document.getElementById("
                          "'log-stderr'); return p && p.textContent; })()")
    check("gate opened: failing on purpose" in stderr, f"stderr tail shown: {stderr!r}")
    state = browser.js("document.getElementById('job').dataset.state")
    check(state == "failed", f"job page state: {state}")

    # Follow a result to its lineage: wordcount/top's job, its lineage, Verify.
    browser.js("location.hash = '#/stage/wordcount/top'")
    browser.wait("top's job", "!!document.querySelector('#stage[data-stage=top] tr[data-job] a')")
    browser.js("document.querySelector('#stage tr[data-job] a').click()")
    browser.wait("the job page", "!!document.getElementById('lineage-link')")
    out = browser.js("document.querySelector('#job').textContent")
    check("wordcount/top" in out and "ok, canonical" in out, f"job page: {out[:300]}")
    browser.js("document.getElementById('lineage-link').click()")
    steps = browser.wait("the lineage graph", "(() => { const g = document.querySelectorAll("
                         "'#lineage g.node[data-step]'); return g.length && Array.from(g)"
                         ".map(n => [n.dataset.kind, n.textContent]); })()")
    lin = get_json(port, "/api/lineage?" + q(ref=browser.js(
        "document.getElementById('lineage').dataset.ref")))
    check(len(steps) == len(lin["steps"]) == 12, f"lineage drawn: {len(steps)} steps")
    check(sum(1 for k, t in steps if k == "source" and t.startswith("corpus v")) == 1,
          f"the source version drawn: {steps}")
    for name in STAGES:
        check(any(k == "job" and t.startswith(name) for k, t in steps), f"no {name} step: {steps}")
    browser.js("document.getElementById('verify').click()")
    verdict = browser.wait("the verification", "(() => { const v = document.getElementById("
                           "'verify-result'); return v.dataset.ok && [v.dataset.ok, v.textContent]; })()")
    check(verdict[0] == "true" and "verified: 12 signatures, 12 attestations" in verdict[1],
          f"verify: {verdict}")

    # The mesh page.
    browser.js("location.hash = '#/mesh'")
    agents = browser.wait("the agents", "(() => { const r = document.querySelectorAll("
                          "'table.agents tr[data-agent]'); return r.length === 3 && Array.from(r)"
                          ".map(x => [x.dataset.agent, x.dataset.liveness]); })()")
    check(sorted(agents) == [["a", "self"], ["b", "alive"], ["c", "alive"]], f"mesh: {agents}")
    browser.screenshot(os.path.join(OUTDIR, "web-mesh.png"))


if __name__ == "__main__":
    run_scenario({"api": scenario_api, "browser": scenario_browser}, sys.argv[5])
