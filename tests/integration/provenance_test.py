#!/usr/bin/python3
"""Provenance others can check, and results compared by what they are made of, on a
real mesh running the wordcount example (docs/provenance.md, docs/cli.md).

attest: `vow attest wordcount/top.report` writes an in-toto bundle that is checked here
  without vow: every DSSE signature with PyNaCl and with securesystemslib over the
  pre-authentication encoding computed here, every subject digest against the
  artifact's bytes (or a tree's encoding, docs/identity.md), the chain from the report
  back to the source version, and one changed byte in any attestation failing the check.
diff: three runs (the `merge` command edited, then one word of one corpus file
  changed); `vow diff` names exactly the edited stage and what is downstream of it, the
  new source version and the shards it fed, and nothing else.

usage: provenance_test.py VOW VOWD SOURCE_ROOT SCENARIO
"""
import base64
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys

import nacl.exceptions
import nacl.signing
from securesystemslib.signer import Signature, SSlibKey

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mesh import Mesh, check, run_scenario, wait_until  # noqa: E402

VOW, VOWD, ROOT = sys.argv[1:4]
WORDCOUNT = os.path.join(ROOT, "examples", "wordcount", "wordcount.toml")
PAYLOAD_TYPE = "application/vnd.in-toto+json"
WORDS = ["bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra",
         "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"]


def make_corpus(dest):
    """Eight small files over 26 words, "alpha" on every line: the report (the 20 most
    frequent words) is not the whole count, and one "alpha" less changes it."""
    os.makedirs(dest)
    for f in range(8):
        with open(os.path.join(dest, f"part{f}.txt"), "w") as out:
            for line in range(30):
                out.write(" ".join(["alpha"] + [WORDS[(f * 7 + line * 3 + k) % len(WORDS)]
                                                for k in range(1 + line % 4)]) + "\n")


def start_mesh():
    mesh = Mesh(VOW, VOWD, [WORDCOUNT], prefix="vow-provenance-")
    corpus = os.path.join(mesh.root, "corpus")
    make_corpus(corpus)
    every = [("wordcount/split", 1), ("wordcount/count", 2), ("wordcount/merge", 1),
             ("wordcount/top", 1)]
    mesh.add("a", every, sources=[("wordcount/corpus", corpus, True)])
    mesh.add("b", [("wordcount/count", 2), ("wordcount/merge", 1), ("wordcount/top", 1)])
    mesh.start()
    return mesh, corpus


def vow(agent, *args, rc=0):
    p = agent.vow(*args, check_rc=False, timeout=120)
    check(p.returncode == rc, f"vow {' '.join(args)} on {agent.name}: rc {p.returncode} "
          f"(want {rc}): {p.stdout}{p.stderr}")
    return p


def wait_done(agent):
    vow(agent, "wait", "wordcount", "--timeout", "60s")


def report_digest(agent):
    return json.loads(vow(agent, "lineage", "wordcount/top.report", "--json").stdout)[
        "artifacts"][0]


def b2(data):
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def object_bytes(mesh, digest):
    for a in mesh.agents:
        path = os.path.join(a.state, "artifacts", "objects", digest[:2], digest)
        if os.path.exists(path):
            with open(path, "rb") as f:
                return f.read()
    return None


def pae(payload_type, payload):
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def tree_digest(entries):
    """docs/identity.md: "vow-tree-v1\\n", then per entry sorted by name: kind byte,
    u64 little-endian name length, name, 32-byte digest."""
    enc = b"vow-tree-v1\n"
    for name, kind, digest in sorted(entries):
        enc += kind + struct.pack("<Q", len(name)) + name + bytes.fromhex(digest)
    return b2(enc)


KIND_BYTE = {"file": b"f", "executable": b"x", "tree": b"d"}


def check_bundle(lines, keys, mesh, root_digests):
    """Every problem found in a bundle, checked as a third party would: no vow code."""
    problems = []
    subjects = {}   # (algorithm, digest) -> invocationId of the attestation naming it
    statements = []
    for n, line in enumerate(lines, 1):
        env = json.loads(line)
        if env.get("payloadType") != PAYLOAD_TYPE:
            problems.append(f"line {n}: payloadType {env.get('payloadType')!r}")
            continue
        payload = base64.b64decode(env["payload"], validate=True)
        if len(env.get("signatures", [])) != 1:
            problems.append(f"line {n}: {len(env.get('signatures', []))} signatures")
            continue
        sig = env["signatures"][0]
        key = keys.get(sig["keyid"])
        if key is None:
            problems.append(f"line {n}: no key {sig['keyid']}")
            continue
        raw_sig = base64.b64decode(sig["sig"], validate=True)
        message = pae(env["payloadType"], payload)
        try:
            nacl.signing.VerifyKey(bytes.fromhex(key["keyval"]["public"])).verify(message,
                                                                                  raw_sig)
        except nacl.exceptions.BadSignatureError:
            problems.append(f"line {n}: bad signature (PyNaCl)")
            continue
        sslib_key = SSlibKey.from_dict(sig["keyid"], {k: key[k] for k in
                                                      ("keytype", "scheme", "keyval")})
        try:
            sslib_key.verify_signature(Signature(sig["keyid"], raw_sig.hex()), message)
        except Exception as e:  # securesystemslib raises its own verification errors
            problems.append(f"line {n}: bad signature (securesystemslib): {e}")
            continue
        st = json.loads(payload)
        if st.get("_type") != "https://in-toto.io/Statement/v1" or \
                st.get("predicateType") != "https://slsa.dev/provenance/v1":
            problems.append(f"line {n}: not an in-toto Statement of SLSA provenance")
            continue
        builder = st["predicate"]["runDetails"]["builder"]["id"]
        if builder != "urn:vow:agent:" + key["id"]:
            problems.append(f"line {n}: built by {builder} but signed by {sig['keyid']}")
        statements.append(st)
        # Subjects: files hash to their digest; a tree's digest is its entries' encoding.
        entries = {}
        for s in st["subject"]:
            (alg, digest), = s["digest"].items()
            subjects[(alg, digest)] = st["predicate"]["runDetails"]["metadata"]["invocationId"]
            ann = s.get("annotations", {})
            if "entryOf" in ann:
                entries.setdefault(ann["entryOf"], []).append(
                    (s["name"][len(ann["entryOf"]) + 1:].encode(), KIND_BYTE[ann["kind"]],
                     digest))
            if alg == "blake2b256":
                data = object_bytes(mesh, digest)
                if data is None:
                    problems.append(f"line {n}: subject {s['name']} is held by no agent")
                elif b2(data) != digest:
                    problems.append(f"line {n}: subject {s['name']} does not hash to {digest}")
            elif alg != "vowTree1":
                problems.append(f"line {n}: subject {s['name']} digest algorithm {alg}")
        for s in st["subject"]:
            (alg, digest), = s["digest"].items()
            if alg == "vowTree1" and tree_digest(entries.get(s["name"], [])) != digest:
                problems.append(f"line {n}: tree {s['name']} is not made of its entries")
    # The chain: every dependency of every step is a subject of another attestation,
    # and the result asked for is one.
    for st in statements:
        deps = st["predicate"]["buildDefinition"].get("resolvedDependencies", [])
        for dep in deps:
            (alg, digest), = dep["digest"].items()
            if (alg, digest) in subjects:
                continue
            # A fan-in directory: the consumer's own tree of other steps' outputs, linked
            # when it is made of its listed entries and each of them is attested.
            parts = [d for d in deps if d.get("annotations", {}).get("entryOf") == dep["name"]]
            if alg == "vowTree1" and parts and \
                    all(tuple(*p["digest"].items()) in subjects for p in parts) and \
                    tree_digest([(p["name"][len(dep["name"]) + 1:].encode(),
                                  KIND_BYTE[p["annotations"]["kind"]],
                                  next(iter(p["digest"].values()))) for p in parts]) == digest:
                continue
            if (alg, digest) not in subjects:
                problems.append(f"{st['predicate']['runDetails']['metadata']['invocationId']}:"
                                f" dependency {dep['name']} {digest[:12]} is attested by no step")
    for d in root_digests:
        if ("blake2b256", d) not in subjects and ("vowTree1", d) not in subjects:
            problems.append(f"the result {d} is the subject of no attestation")
    return problems, statements


def scenario_attest():
    mesh, _ = start_mesh()
    try:
        a, b = mesh.agents
        wait_done(a)
        bundle = os.path.join(mesh.root, "report.intoto.jsonl")
        out = json.loads(vow(b, "attest", "wordcount/top.report", "-o", bundle,
                             "--json").stdout)
        check(out["keys_file"] == bundle + ".keys.json", f"keys file: {out['keys_file']}")
        with open(bundle, "rb") as f:
            lines = [x for x in f.read().split(b"\n") if x]
        with open(out["keys_file"]) as f:
            keys = json.load(f)["keys"]
        check({k["id"] for k in keys.values()} <= {a.id, b.id} and
              a.id in {k["id"] for k in keys.values()},
              f"keys: {keys}, agents {a.id} (provider), {b.id}")
        # One attestation per step of the lineage: the source version, split, 8 shards
        # of count, merge, top.
        lineage = json.loads(vow(b, "lineage", "wordcount/top.report", "--json").stdout)
        check(len(lines) == len(lineage["steps"]) == 12,
              f"{len(lines)} attestations for {len(lineage['steps'])} steps")
        problems, statements = check_bundle(lines, keys, mesh, lineage["artifacts"])
        check(not problems, "the bundle does not check:\n" + "\n".join(problems))
        kinds = sorted(s["predicate"]["buildDefinition"]["buildType"] for s in statements)
        check(kinds.count("urn:vow:source-version:v1") == 1 and
              kinds.count("urn:vow:job:v1") == 11, f"build types: {kinds}")
        # The stage definition as signed is the one in the pipeline file.
        top = [s for s in statements
               if s["predicate"]["buildDefinition"]["externalParameters"].get("stage") == "top"]
        check(len(top) == 1 and top[0]["predicate"]["buildDefinition"]["externalParameters"][
            "definition"]["argv"][:2] == ["/bin/sh", "-c"], f"top's definition: {top}")
        # vow lineage and vow why name each step's attestation by the digest of its line.
        by_digest = {b2(x): x for x in lines}
        for s in lineage["steps"]:
            check(s.get("attestation") in by_digest,
                  f"step {s['id']}: attestation {s.get('attestation')} is not in the bundle")
        human = vow(b, "lineage", "wordcount/top.report").stdout
        check(human.count("attested  ") == 12, f"lineage text: {human}")
        top_step = [s for s in lineage["steps"] if s.get("stage") == "top"][0]
        why = json.loads(vow(a, "why", top_step["job"], "--json").stdout)
        check(why.get("attestation") == top_step["attestation"],
              f"why's attestation {why.get('attestation')} != {top_step['attestation']}")
        # vow verify checks every attestation in the ledger too.
        v = json.loads(vow(a, "verify", "--json").stdout)
        check(v["ok"] and v["attestations"] >= 12, f"vow verify: {v}")
        # One changed byte in any attestation fails the check.
        for i, line in enumerate(lines):
            env = json.loads(line)
            payload = bytearray(base64.b64decode(env["payload"]))
            payload[len(payload) // 2] ^= 0x01
            env["payload"] = base64.b64encode(bytes(payload)).decode()
            tampered = lines[:i] + [json.dumps(env).encode()] + lines[i + 1:]
            bad, _ = check_bundle(tampered, keys, mesh, lineage["artifacts"])
            check(any(f"line {i + 1}: bad signature" in p for p in bad),
                  f"a changed byte in attestation {i + 1} went unnoticed: {bad}")
        # A reference that names nothing is refused (not found: 3), naming it, and
        # writes nothing.
        missing = os.path.join(mesh.root, "none.jsonl")
        p = vow(b, "attest", "wordcount/nosuch.out", "-o", missing, rc=3)
        check("no stage wordcount/nosuch" in p.stderr and not os.path.exists(missing),
              f"attest of an unknown stage: {p.stderr}")
    finally:
        mesh.cleanup()


def edit_merge(path):
    with open(path) as f:
        text = f.read()
    old = 'sort -k1,1nr -k2,2 > "$VOW_OUT_totals"'
    check(old in text, "the example's merge command changed: update this test")
    with open(path, "w") as f:
        f.write(text.replace(old, 'sort -k1,1nr -k2,2 | tr " " "\\t" > "$VOW_OUT_totals"'))


def diff(agent, x, y, *flags, rc=1):
    return vow(agent, "diff", x, y, *flags, rc=rc).stdout


def steps_by(d, state):
    return {s["step"] for s in d["steps"] if s["state"] == state}


def scenario_diff():
    mesh, corpus = start_mesh()
    try:
        a, b = mesh.agents
        wait_done(a)
        first = report_digest(a)
        same = diff(b, first, "wordcount/top.report", rc=0)
        check("the same: all 12 steps" in same, f"diff of a result with itself: {same}")
        # A reference that names nothing: not found (3), naming it.
        p = vow(b, "diff", "wordcount/nosuch.out", "wordcount/top.report", rc=3)
        check("nosuch" in p.stderr, f"diff with an unknown stage: {p.stderr}")

        # Second run: the merge command is edited, the agents reload.
        edit_merge(mesh.pipelines[0])
        for ag in mesh.agents:
            ag.proc.send_signal(signal.SIGHUP)
        wait_until("the edited report", lambda: (wait_done(a), report_digest(a))[1] != first,
                   60)
        second = report_digest(a)
        d = json.loads(diff(b, first, second, "--json"))
        check(d["summary"]["origins"] == ["wordcount/merge"],
              f"origins: {d['summary']}\n{diff(b, first, second)}")
        check(steps_by(d, "differs") == {"wordcount/merge", "wordcount/top"},
              f"differing steps: {steps_by(d, 'differs')}")
        check(len(steps_by(d, "same")) == 10 and "wordcount/split" in steps_by(d, "same"),
              f"upstream steps: {steps_by(d, 'same')}")
        merge = [s for s in d["steps"] if s["step"] == "wordcount/merge"][0]
        check(merge["causes"] == ["definition"], f"merge: {merge}")
        ops = {(x["op"], x["text"].strip()) for x in merge["definition"]["command"]}
        check(("-", 'sort -k1,1nr -k2,2 > "$VOW_OUT_totals"') in ops and
              ("+", 'sort -k1,1nr -k2,2 | tr " " "\\t" > "$VOW_OUT_totals"') in ops,
              f"command diff: {merge['definition']['command']}")
        text = diff(b, first, second)
        check("the differences start at wordcount/merge" in text and
              '    +   sort -k1,1nr -k2,2 | tr " " "\\t" > "$VOW_OUT_totals"' in text,
              f"diff text: {text}")

        # Third run: one word of one corpus file changed, the same length, so that the
        # split keeps its shard boundaries and only the shard holding it changes.
        path = os.path.join(corpus, "part0.txt")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("alpha", "omega", 1))
        wait_until("the report of the new corpus",
                   lambda: (wait_done(a), report_digest(a))[1] != second, 60)
        third = report_digest(a)
        d = json.loads(diff(a, second, third, "--json"))
        check(d["summary"]["origins"] == ["wordcount/corpus"], f"origins: {d['summary']}")
        corpus_step = [s for s in d["steps"] if s["step"] == "wordcount/corpus"][0]
        check(corpus_step["version"]["b"]["version"] == corpus_step["version"]["a"]["version"]
              + 1, f"corpus versions: {corpus_step}")
        # The shards it fed: exactly the count jobs whose input shard changed, by the
        # lineages themselves.
        def shard_inputs(ref):
            lin = json.loads(vow(a, "lineage", ref, "--json").stdout)
            return {s["shard"]: s["inputs"]["shards"] for s in lin["steps"]
                    if s.get("stage") == "count"}
        before, after = shard_inputs(second), shard_inputs(third)
        fed = {f"wordcount/count[{k}]" for k in before if before[k] != after.get(k)}
        check(fed and len(fed) < 8, f"shards changed by one word: {fed}")
        counted = {s for s in steps_by(d, "differs") if s.startswith("wordcount/count")}
        check(counted == fed, f"diff names shards {counted}, the lineages {fed}")
        check(steps_by(d, "differs") == {"wordcount/corpus", "wordcount/split",
                                         "wordcount/merge", "wordcount/top"} | fed,
              f"differing steps: {steps_by(d, 'differs')}")

        # From the first to the third run: both changes, each where it starts.
        d = json.loads(diff(b, first, third, "--json"))
        check(d["summary"]["origins"] == ["wordcount/corpus", "wordcount/merge"],
              f"origins: {d['summary']}")
        dot = diff(b, first, third, "--dot")
        check('"wordcount/merge" [label="wordcount/merge\\ndefinition, inputs", '
              'fillcolor="#f4a6a6"' in dot and
              f'"{sorted(fed)[0]}" [label="{sorted(fed)[0]}\\ninputs", fillcolor="#fbd9a5"'
              in dot and dot.startswith("digraph diff {"), f"dot: {dot}")
        p = subprocess.run([VOW, "diff", first], capture_output=True, text=True)
        check(p.returncode == 2, f"diff with one argument: rc {p.returncode}")
    finally:
        mesh.cleanup()


if __name__ == "__main__":
    run_scenario({"attest": scenario_attest, "diff": scenario_diff}, sys.argv[4])
