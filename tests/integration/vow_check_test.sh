#!/usr/bin/env bash
# Runs the built `vow check` and `vow graph` as a user would: on the examples (exit 0),
# on broken files (exit 1, each error located as FILE:LINE:COLUMN), and with bad
# arguments (exit 2 and a usage line).
#   vow_check_test.sh VOW_BINARY SOURCE_ROOT
set -uo pipefail
vow=$1
root=$2
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

# Bad arguments: usage, exit 2.
expect 2 '^usage: vow' -- "$vow"
expect 2 '^usage: vow' -- "$vow" check
expect 2 '^usage: vow' -- "$vow" check --jsno "$ex"/wordcount.toml
expect 2 '^usage: vow' -- "$vow" frobnicate
expect 0 'check' -- "$vow" --help

if ((failures)); then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all vow check/graph checks passed"
