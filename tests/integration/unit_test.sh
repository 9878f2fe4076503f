#!/bin/sh
# The installed systemd unit passes `systemd-analyze verify`, and
# `systemd-analyze security --offline` rates it below 3.0 ("OK"). The unit names its
# programs where they are installed; here they are the built ones. Skipped (77) without
# systemd-analyze.
#   unit_test.sh BUILT_UNIT VOW VOWD
set -eu
unit=$1
vow=$(realpath "$2")
vowd=$(realpath "$3")
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e "s|^ExecStartPre=[^ ]*/vow |ExecStartPre=$vow |" \
    -e "s|^ExecStart=[^ ]*/vowd |ExecStart=$vowd |" "$unit" >"$tmp/vowd.service"
grep -q "^ExecStart=$vowd " "$tmp/vowd.service" || { echo "FAIL: no ExecStart= in $unit"; exit 1; }
systemd-analyze verify "$tmp/vowd.service"
grep -q '^Type=notify$' "$tmp/vowd.service" || { echo "FAIL: not Type=notify"; exit 1; }
grep -q '^KillMode=process$' "$tmp/vowd.service" || { echo "FAIL: KillMode is not process"; exit 1; }
# --threshold is on the 0-100 scale of the 0.0-10.0 rating: 30 is 3.0.
if ! out=$(systemd-analyze security --offline=true --threshold=30 "$tmp/vowd.service" 2>&1); then
  echo "$out" | grep -E '✗|Overall'
  echo "FAIL: the unit's exposure is 3.0 or more"
  exit 1
fi
echo "$out" | tail -n 1
