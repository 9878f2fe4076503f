#!/usr/bin/env bash
# Runs the built `vow check` and `vow graph` as a user would: on the examples (exit 0),
# on broken files (exit 1, each error located as FILE:LINE:COLUMN), and with bad
# arguments (exit 2 and a usage line).
#   vow_check_test.sh VOW_BINARY SOURCE_ROOT [VOWD_BINARY]
set -uo pipefail
vow=$(realpath "$1")
root=$2
vowd=${3:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# expect CODE PATTERN_IN_OUTPUT -- COMMAND...: runs COMMAND, checks its exit status and
# that stdout+stderr match the extended regex.
expect() {
  local code=$1 pattern=$2
  shift 3
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$code" ]; then
    fail "$* exited $rc, expected $code; output:"$'\n'"$out"
  elif ! grep -Eq -- "$pattern" <<<"$out"; then
    fail "$* output does not match /$pattern/:"$'\n'"$out"
  fi
}

ex=$root/examples/wordcount

# The examples are valid, together and one agent file at a time (its pipelines are found
# relative to the agent file, from any working directory).
expect 0 '^ok: 1 pipeline, 3 agents$' -- "$vow" check "$ex"/wordcount.toml "$ex"/agent-a.toml \
  "$ex"/agent-b.toml "$ex"/agent-c.toml
(cd "$tmp" && expect 0 '^ok: 1 pipeline, 1 agent$' -- "$vow" check "$ex"/agent-b.toml) ||
  failures=$((failures + 1))
expect 0 'stages: split, count, merge, top' -- "$vow" check "$ex"/wordcount.toml

# JSON: stages in topological order with their digests.
json=$("$vow" check --json "$ex"/wordcount.toml) || fail "check --json exited $?"
python3 - "$json" <<'PY' || fail "check --json output is wrong: $json"
import json, sys
doc = json.loads(sys.argv[1])
assert doc["errors"] == [], doc["errors"]
(p,) = doc["pipelines"]
assert p["name"] == "wordcount" and len(p["digest"]) == 64
assert [s["name"] for s in p["stages"]] == ["split", "count", "merge", "top"]
assert p["stages"][1]["inputs"] == ["split.shards"] and p["stages"][1]["outputs"] == ["counts"]
PY

# A broken pipeline: every error, located.
cat >"$tmp/broken.toml" <<'TOML'
[pipeline]
name = "b"

[[stage]]
name = "a"
inputs = ["nowhere"]
outputs = ["o"]
run = "true"
timout = "5s"
TOML
expect 1 "^$tmp/broken.toml:6:11: input 'nowhere' names no source" -- "$vow" check "$tmp/broken.toml"
expect 1 "^$tmp/broken.toml:9:1: unknown key 'timout' in \[\[stage\]\] \(did you mean 'timeout'\?\)" \
  -- "$vow" check "$tmp/broken.toml"
expect 1 '^2 errors$' -- "$vow" check "$tmp/broken.toml"
json=$("$vow" check --json "$tmp/broken.toml")
[ $? -eq 1 ] || fail "check --json on a broken file must exit 1"
python3 -c 'import json,sys; e=json.loads(sys.argv[1])["errors"]; assert [(x["line"],x["column"]) for x in e]==[(6,11),(9,1)], e' \
  "$json" || fail "check --json errors are wrong: $json"

# An agent promising a stage its pipeline does not define.
sed 's|wordcount/merge|wordcount/merj|; s|"wordcount.toml"|"'"$ex"'/wordcount.toml"|' \
  "$ex/agent-b.toml" >"$tmp/agent.toml"
expect 1 "^$tmp/agent.toml:[0-9]+:9: promise for stage 'wordcount/merj'.*did you mean 'wordcount/merge'" \
  -- "$vow" check "$tmp/agent.toml"
expect 1 "^$tmp/missing.toml: cannot read" -- "$vow" check "$tmp/missing.toml"

# An agent file whose pipeline file is broken: the pipeline's errors, not a second error
# for each promise of the pipeline that did not load.
mkdir "$tmp/b"
cp "$ex/agent-a.toml" "$tmp/b/"
printf '[pipeline]\nname = "wordcount"\n[[stage]]\nname = "x"\noutputs = []\nrun = 3\n' \
  >"$tmp/b/wordcount.toml"
expect 1 "^$tmp/b/wordcount.toml:6:7: 'run' in \[\[stage\]\] must be a string" -- "$vow" check "$tmp/b/agent-a.toml"
expect 1 '^1 error$' -- "$vow" check "$tmp/b/agent-a.toml"

# Each host's copy of one pipeline: identical copies are fine; a stage defined
# differently is an error at both definitions (agents would promise two of it).
mkdir "$tmp/h1" "$tmp/h2"
cp "$ex/agent-a.toml" "$ex/wordcount.toml" "$tmp/h1/"
cp "$ex/agent-b.toml" "$ex/wordcount.toml" "$tmp/h2/"
expect 0 '^ok: 1 pipeline, 2 agents$' -- "$vow" check "$tmp/h1/agent-a.toml" "$tmp/h2/agent-b.toml"
sed -i 's|head -n 20|head -n 10|' "$tmp/h2/wordcount.toml"
expect 1 "^$tmp/h2/wordcount.toml:50:1: stage 'wordcount/top' differs from its definition at $tmp/h1/wordcount.toml:50:1" \
  -- "$vow" check "$tmp/h1/agent-a.toml" "$tmp/h2/agent-b.toml"

# graph
expect 0 '^  stage count [0-9a-f]{12}, one job per entry of split.shards$' -- "$vow" graph "$ex"/wordcount.toml
expect 0 '"wordcount/stage/split" -> "wordcount/stage/count" \[label="shards", style=bold\]' \
  -- "$vow" graph --dot "$ex"/agent-a.toml
expect 1 "broken.toml:6:11" -- "$vow" graph "$tmp/broken.toml"
# The DOT labels read as they should once drawn: a fan-out stage is "count" over
# "(foreach)" on two lines, never a literal backslash (and so with Graphviz, if here).
"$vow" graph --dot "$ex"/wordcount.toml >"$tmp/graph.dot" || fail "graph --dot exited $?"
python3 - "$root/tests/integration" "$tmp/graph.dot" <<'PY' || fail "graph --dot labels: $(cat "$tmp/graph.dot")"
import sys
sys.path.insert(0, sys.argv[1])
from dot_labels import labels, rendered_texts
dot = open(sys.argv[2]).read()
shown = labels(dot)
assert ["count", "(foreach)"] in shown, shown
assert ["split"] in shown and ["corpus"] in shown, shown
assert not any("\\" in line for label in shown for line in label), shown
texts = rendered_texts(dot)
if texts is not None:
    assert "count" in texts and "(foreach)" in texts, texts
    assert not any("\\" in t for t in texts), texts
PY

# Bad arguments: usage, exit 2.
expect 2 '^usage: vow' -- "$vow"
expect 2 '^usage: vow' -- "$vow" check
expect 2 '^usage: vow' -- "$vow" check --jsno "$ex"/wordcount.toml
expect 2 '^usage: vow' -- "$vow" frobnicate
expect 0 'check' -- "$vow" --help

# --version: the release and what a mixed mesh must agree on.
expect 0 '^vow [0-9]+\.[0-9]+\.[0-9]+ \(protocol [0-9]+, ledger schema [0-9]+\)$' -- "$vow" --version
if [ -n "$vowd" ]; then
  expect 0 '^vowd [0-9]+\.[0-9]+\.[0-9]+ \(protocol [0-9]+, ledger schema [0-9]+\)$' -- "$vowd" --version
  [ "$("$vow" --version | cut -d' ' -f2-)" = "$("$vowd" --version | cut -d' ' -f2-)" ] ||
    fail "vow and vowd report different versions"
  expect 2 "^usage: vowd --config FILE" -- "$vowd" --bogus
  expect 2 "log-format" -- "$vowd" --config x --log-format xml
fi
# A mistyped command is named, with the command meant, and a short usage (not the help).
expect 2 "^vow: unknown command 'stauts' \(did you mean 'status'\?\)$" -- "$vow" stauts
expect 2 "^commands: check graph fsck keys status wait retry gc verify" -- "$vow" stauts
[ "$("$vow" stauts 2>&1 | wc -l)" -le 4 ] || fail "vow stauts prints more than a short usage"
expect 2 "^vow: unknown option '--bogus'$" -- "$vow" --bogus
expect 2 "^vow keys: unknown command 'gne' \(did you mean 'gen'\?\)$" -- "$vow" keys gne
# Malformed arguments are usage errors, found before any agent is asked; no agent
# answering is a failure (1); see tests/integration/cli_test.py for not found (3) and
# timed out (4).
none=$tmp/no-agent
expect 2 "'abc' is not a job id" -- "$vow" job abc --state-dir "$none"
expect 2 "'abc' is not a job id" -- "$vow" why abc --state-dir "$none"
expect 2 "'nonsense' is not an artifact" -- "$vow" lineage nonsense --state-dir "$none"
expect 2 "'nonsense' is not an artifact" -- "$vow" get nonsense -o - --state-dir "$none"
expect 2 "bad duration 'soon'" -- "$vow" wait wordcount --timeout soon --state-dir "$none"
expect 2 "neither a job id" -- "$vow" retry xyz --state-dir "$none"
expect 1 "no agent at ipc://$none/control.sock" -- "$vow" status --state-dir "$none"

# An advertise address peers can dial, checked where it is written.
sed 's|^listen = .*|&\nadvertise = "tcp://0.0.0.0:7401"|; s|"wordcount.toml"|"'"$ex"'/wordcount.toml"|' \
  "$ex/agent-a.toml" >"$tmp/advertise.toml"
expect 1 "^$tmp/advertise.toml:[0-9]+:13: bad endpoint 'tcp://0.0.0.0:7401' for 'advertise': .*not a wildcard" \
  -- "$vow" check "$tmp/advertise.toml"
sed -i 's|^advertise = .*|advertise = "tcp://vow-0.vow.default.svc:7401"|' "$tmp/advertise.toml"
expect 0 '^ok: 1 pipeline, 1 agent$' -- "$vow" check "$tmp/advertise.toml"

# The trust lists, checked as vowd reads them at start: an id that is not one, where it
# is written; a bad line of a key file, where it is in that file. A key_files pattern
# that matches no file is a warning (keys are often installed after the agent file):
# exit 0, the warning on stderr and in --json.
mkdir -p "$tmp/t/keys" "$tmp/t/corpus"
sed 's|"wordcount.toml"|"'"$ex"'/wordcount.toml"|; s|^key_files = .*|keys = ["notakey"]\nclients = ["vowabc"]\n&|' \
  "$ex/agent-a.toml" >"$tmp/t/agent.toml"
"$vow" keys gen --state-dir "$tmp/t/id" >"$tmp/t/keys/a.pub" || fail "keys gen"
expect 1 "^$tmp/t/agent.toml:13:9: 'notakey' in \[trust\] keys is not an agent id" \
  -- "$vow" check "$tmp/t/agent.toml"
expect 1 "^$tmp/t/agent.toml:14:12: 'vowabc' in \[trust\] clients is not an agent id" \
  -- "$vow" check "$tmp/t/agent.toml"
good=$(cat "$tmp/t/keys/a.pub")
sed -i "s|\"notakey\"|\"$good\"|; s|\"vowabc\"|\"$good\"|" "$tmp/t/agent.toml"
expect 0 '^ok: 1 pipeline, 1 agent$' -- "$vow" check "$tmp/t/agent.toml"
printf '# trusted\n\n  %s\n  vowbroken\n' "$good" >"$tmp/t/keys/b.pub"
expect 1 "^$tmp/t/keys/b.pub:4:3: 'vowbroken' \(matched by key_files 'keys/\*.pub'\) is not an agent id" \
  -- "$vow" check "$tmp/t/agent.toml"
expect 1 '^1 error$' -- "$vow" check "$tmp/t/agent.toml"
if [ -n "$vowd" ]; then
  # vowd refuses the same file at start, with the same location.
  expect 1 "$tmp/t/keys/b.pub:4" -- "$vowd" --config "$tmp/t/agent.toml" --state-dir "$tmp/t/state"
fi
rm "$tmp/t/keys/"*.pub
expect 0 "^$tmp/t/agent.toml:15:14: warning: key_files pattern 'keys/\*.pub' matches no file \(looked for $tmp/t/keys/\*.pub\)" \
  -- "$vow" check "$tmp/t/agent.toml"
expect 0 '^ok: 1 pipeline, 1 agent$' -- "$vow" check "$tmp/t/agent.toml"
json=$("$vow" check --json "$tmp/t/agent.toml") || fail "check --json with a warning exited $?"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); w=d["warnings"]; assert d["errors"]==[] and [(x["line"],x["column"]) for x in w]==[(15,14)] and "matches no file" in w[0]["message"], d' \
  "$json" || fail "check --json warnings are wrong: $json"
# A source path that is not there, or is a symbolic link, is a warning where the source
# is declared: the agent would publish no version of it.
rmdir "$tmp/t/corpus"
expect 0 "^$tmp/t/agent.toml:[0-9]+:[0-9]+: warning: source 'wordcount/corpus' path $tmp/t/corpus does not exist here" \
  -- "$vow" check "$tmp/t/agent.toml"
ln -s /tmp "$tmp/t/corpus"
expect 0 "^$tmp/t/agent.toml:[0-9]+:[0-9]+: warning: source 'wordcount/corpus' path $tmp/t/corpus is a symbolic link" \
  -- "$vow" check "$tmp/t/agent.toml"

if ((failures)); then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all vow check/graph checks passed"
