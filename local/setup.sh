#!/usr/bin/env bash
# Create .venv and install asr-kd with its whole stack (torch 1.13.1, k2 1.23.4, lhotse, kaldi tools).
# Usage: local/setup.sh [VENV_DIR]    (default: .venv in the repository root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  "$python" -m venv "$venv"
fi
pip="$venv/bin/python -m pip"
# pip >= 24 rejects k2's "py3.11" wheel tag outright; pip 23 reads it (and the hash picks the file).
$pip install --quiet "pip>=23,<24"
$pip install --quiet -r "$root/requirements.txt"
$pip install --quiet --no-deps --require-hashes -r "$root/requirements-k2.txt"
$pip install --quiet --no-deps -e "$root"
"$venv/bin/python" -c "import k2, lhotse, kaldifst, torch; print('setup: ok  torch', torch.__version__, ' k2', k2.__dev_version__, ' lhotse', lhotse.__version__)"
