#!/bin/sh
# The bash completion (agent/dist/vow.bash) offers vow's subcommands and a subcommand's
# options, read from the vow it is given.
set -eu
VOW=$1
COMPLETION=$2
bash -c '
  set -eu
  vow=$1
  . "$2"
  complete_at() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _vow; }
  complete_at "$vow" sta
  [ "${COMPREPLY[*]}" = "status" ] || { echo "vow sta<TAB>: ${COMPREPLY[*]}"; exit 1; }
  complete_at "$vow" ""
  for s in check status wait retry get attest diff; do
    case " ${COMPREPLY[*]} " in *" $s "*) ;; *) echo "vow <TAB> lacks $s: ${COMPREPLY[*]}"; exit 1;; esac
  done
  complete_at "$vow" get --o
  [ "${COMPREPLY[*]}" = "--out" ] || { echo "vow get --o<TAB>: ${COMPREPLY[*]}"; exit 1; }
  complete_at "$vow" wait --t
  [ "${COMPREPLY[*]}" = "--timeout" ] || { echo "vow wait --t<TAB>: ${COMPREPLY[*]}"; exit 1; }
' sh "$VOW" "$COMPLETION"
echo "ok completion"
