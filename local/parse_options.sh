# Kaldi-style option parsing, sourced by recipe scripts after they set their defaults:
#   stage=0; stop_stage=100; max_stage=12; . ../../local/parse_options.sh
# turns "--stop-stage 3" into stop_stage=3 for any variable the script already defines.
# "--help" prints the variables that can be set. Anything else on the command line (a stray
# argument, a stage that is not a number, --stage after --stop-stage, a range with none of the
# recipe's stages 0..max_stage) is an error: one line, exit 1, nothing run. A script that sets
# positional="<arg>..." (local/steps/*.sh, as Kaldi's steps/) takes its arguments after the options.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      script=$(basename "$0"); [ -f "$script" ] || script=$0
      echo "usage: $0 [--option value ...]${positional:+ $positional}; the options and their defaults (later lines override):" >&2
      defaults=/dev/null
      grep -q "defaults.sh" "$script" && defaults="$(dirname "${BASH_SOURCE[0]}")/defaults.sh"
      # the settings: every line of defaults.sh, and the script's lines before it parses its options
      { cat "$defaults"; sed -n '1,/parse_options.sh/p' "$script"; } | grep -E '^[a-z_]+=' | grep -vE '^(cmdline|corpus|max_stage|positional)=|[$][{]|=[(]' \
        | sed -E 's/^([a-z_]+)=("[^"]*"|[^ #]*) *(# *(.*))?$/\1\t\2\t\4/' \
        | awk -F'\t' '{ gsub("_", "-", $1); printf "  --%-20s %-28s %s\n", $1, ($2 == "" ? "\"\"" : $2), $3 }' >&2
      if grep -qE '^#   [0-9]' "$script"; then  # a recipe: its stages, from its header
        echo "stages:" >&2
        sed -nE 's/^#   ([0-9])/  \1/p' "$script" >&2
      fi
      exit 0 ;;
    --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
    --*) name=$1; value=${2:-}; [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }; shift 2 ;;
    *) [ -z "${positional:-}" ] || break   # a step script (local/steps/*.sh): its arguments follow the options
       echo "$0: unexpected argument '$1': options are --name value (see --help)" >&2; exit 1 ;;
  esac
  name=${name#--}; name=${name//-/_}
  if [ "$name" = max_stage ] || ! declare -p "$name" >/dev/null 2>&1; then
    echo "$0: unknown option --${name//_/-}" >&2; exit 1
  fi
  printf -v "$name" '%s' "$value"
done

if declare -p stage >/dev/null 2>&1 && declare -p stop_stage >/dev/null 2>&1; then
  for _opt in stage stop_stage; do
    [[ ${!_opt} =~ ^[0-9]+$ ]] || { echo "$0: --${_opt//_/-} must be a stage number, not '${!_opt}'" >&2; exit 1; }
  done
  if [ "$stage" -gt "$stop_stage" ]; then
    echo "$0: --stage $stage is after --stop-stage $stop_stage: no stage to run" >&2; exit 1
  fi
  if [ -n "${max_stage:-}" ] && [ "$stage" -gt "$max_stage" ]; then
    echo "$0: --stage $stage: no such stage (this recipe's stages are 0..$max_stage)" >&2; exit 1
  fi
fi
