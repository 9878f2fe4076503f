#!/bin/sh
# vow keys: identity created once with mode 0600, shown as text and JSON, client key
# files, refusal of a group-readable key, and exit code 2 on bad arguments.
set -u
vow=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

id=$("$vow" keys gen --state-dir "$dir/state") || fail "keys gen"
case $id in vow*) ;; *) fail "id '$id' does not start with vow" ;; esac
[ "$(stat -c %a "$dir/state/identity")" = 600 ] || fail "identity mode not 600"
again=$("$vow" keys gen --state-dir "$dir/state" 2>/dev/null) || fail "second keys gen"
[ "$again" = "$id" ] || fail "keys gen replaced an existing identity"
shown=$("$vow" keys show --state-dir "$dir/state") || fail "keys show"
[ "$shown" = "$id" ] || fail "keys show '$shown' != '$id'"
json=$("$vow" keys show --state-dir "$dir/state" --json) || fail "keys show --json"
echo "$json" | grep -q "\"id\":\"$id\"" || fail "json lacks id: $json"
echo "$json" | grep -Eq '"public_key_hex":"[0-9a-f]{64}"' || fail "json lacks key: $json"

cid=$("$vow" keys gen --out "$dir/client.key") || fail "keys gen --out"
[ "$(stat -c %a "$dir/client.key")" = 600 ] || fail "client key mode not 600"
[ "$("$vow" keys show --key "$dir/client.key")" = "$cid" ] || fail "client key id"
"$vow" keys gen --out "$dir/client.key" >/dev/null 2>&1 && fail "overwrote a key file"

chmod 640 "$dir/state/identity"
err=$("$vow" keys show --state-dir "$dir/state" 2>&1) && fail "accepted a 0640 key file"
echo "$err" | grep -q "0640" || fail "error does not name the mode: $err"
echo "$err" | grep -q "$dir/state/identity" || fail "error does not name the file: $err"

"$vow" keys show >/dev/null 2>&1
[ $? -eq 2 ] || fail "missing option did not exit 2"
"$vow" keys frobnicate >/dev/null 2>&1
[ $? -eq 2 ] || fail "unknown subcommand did not exit 2"
echo ok
