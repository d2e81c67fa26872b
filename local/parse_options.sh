# Kaldi-style option parsing, sourced by recipe scripts after they set their defaults:
#   stage=0; stop_stage=100; . ../../local/parse_options.sh
# turns "--stop-stage 3" into stop_stage=3 for any variable the script already defines.
# "--help" prints the variables that can be set.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      script=$(basename "$0"); [ -f "$script" ] || script=$0
      echo "usage: $0 [--option value ...]; the options and their defaults (later lines override):" >&2
      files=$script
      grep -q "local/defaults.sh" "$script" && files="$(dirname "${BASH_SOURCE[0]}")/defaults.sh $script"
      grep -hE '^[a-z_]+=' $files | grep -vE '^(cmdline|corpus)=|[$][{]' \
        | sed -E 's/^([a-z_]+)=("[^"]*"|[^ #]*) *(# *(.*))?$/\1\t\2\t\4/' \
        | awk -F'\t' '{ gsub("_", "-", $1); printf "  --%-20s %-28s %s\n", $1, ($2 == "" ? "\"\"" : $2), $3 }' >&2
      exit 0 ;;
    --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
    --*) name=$1; value=${2:-}; [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }; shift 2 ;;
    *) break ;;
  esac
  name=${name#--}; name=${name//-/_}
  if ! declare -p "$name" >/dev/null 2>&1; then
    echo "$0: unknown option --${name//_/-}" >&2; exit 1
  fi
  printf -v "$name" '%s' "$value"
done
