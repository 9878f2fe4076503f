#!/bin/sh
# vow fsck against a real state directory: clean -> 0, a damaged artifact -> 1 with a
# one-line problem naming it, bad arguments -> 2, not a state directory -> 1.
# Usage: fsck_test.sh VOW STORE_CRASH_HELPER
set -u
vow=$1
helper=$2
dir=$(mktemp -d)
trap 'chmod -R u+w "$dir"; rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$helper" "$dir/state" 7 8 >/dev/null || fail "helper could not populate a state dir"
out=$("$vow" fsck --state-dir "$dir/state") || fail "clean state dir: exit $?: $out"
echo "$out" | grep -q "clean" || fail "clean state dir: no summary: $out"

obj=$(find "$dir/state/artifacts/objects" -type f ! -name '*.tree' | head -1)
chmod u+w "$obj"
printf 'X' | dd of="$obj" bs=1 seek=0 conv=notrunc 2>/dev/null
out=$("$vow" fsck --state-dir "$dir/state")
rc=$?
[ $rc -eq 1 ] || fail "damaged artifact: exit $rc, want 1: $out"
name=$(basename "$obj")
echo "$out" | grep -q "^corrupt: artifact $name: " || fail "damaged artifact not named: $out"

json=$("$vow" fsck --state-dir "$dir/state" --json)
[ $? -eq 1 ] || fail "--json with a damaged artifact: want exit 1"
echo "$json" | grep -q '"kind": "corrupt"' || fail "--json does not list the problem: $json"

"$vow" fsck >/dev/null 2>&1
rc=$?
[ $rc -eq 2 ] || fail "missing --state-dir: exit $rc, want 2"
"$vow" fsck --state-dir "$dir/nowhere" >/dev/null 2>&1
rc=$?
[ $rc -eq 1 ] || fail "not a state dir: exit $rc, want 1"
echo ok
