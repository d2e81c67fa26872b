# Sourced by recipe scripts: put the project's venv (made by local/setup.sh) on PATH,
# and define log() and the stage gate used by every run.sh.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$_root/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$_root/.venv/bin/activate"
fi
command -v asr-kd >/dev/null || { echo "asr-kd not found: run local/setup.sh first" >&2; exit 1; }
export PYTHONUNBUFFERED=1
# The shared corpora sit beside the checkout (../shared/corpora) unless CORPORA says otherwise.
CORPORA=${CORPORA:-$(cd "$_root/.." && pwd)/shared/corpora}

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($fname:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# usage: if stage_on N; then ...; fi   (true when stage <= N <= stop_stage; local/parse_options.sh
# has checked that both are stage numbers)
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# usage: need "3 (lang)" FILE...: a stage's inputs; the first one missing stops the recipe with one
# line naming it and the stage that makes it.
need() {
  local made_by=$1 f; shift
  for f in "$@"; do
    [ -e "$f" ] || { echo "$0: $f not found: run stage $made_by first" >&2; exit 1; }
  done
}
