# Kaldi-style option parsing, sourced by recipe scripts after they set their defaults:
#   stage=0; stop_stage=100; . ../../local/parse_options.sh
# turns "--stop-stage 3" into stop_stage=3 for any variable the script already defines.
# "--help" prints the variables that can be set.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "usage: $0 [--option value ...]; options are the variables set at the top of $0:" >&2
      grep -E '^[a-z_]+=' "$0" | sed 's/^/  --/; s/_/-/g; s/=/ (default: /; s/$/)/' >&2
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
