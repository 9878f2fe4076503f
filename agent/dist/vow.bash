# bash completion for vow: subcommands, their options, and files. What it offers is read
# from `vow --help` and `vow SUBCOMMAND --help`, so it follows the installed version.
_vow() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local vow=${COMP_WORDS[0]}
  if ((COMP_CWORD == 1)); then
    local subs
    subs=$("$vow" --help 2>/dev/null | awk '/^Subcommands:/ {on = 1; next} on && NF {print $1}')
    mapfile -t COMPREPLY < <(compgen -W "$subs --help --version" -- "$cur")
    return
  fi
  if [[ $cur == -* ]]; then
    local opts
    opts=$("$vow" "${COMP_WORDS[1]}" --help 2>/dev/null |
      grep -oE -- '(^|[ ,])--?[A-Za-z][-A-Za-z]*' | tr -d ' ,' | sort -u)
    mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
    return
  fi
  mapfile -t COMPREPLY < <(compgen -f -- "$cur")
}
complete -o filenames -F _vow vow
