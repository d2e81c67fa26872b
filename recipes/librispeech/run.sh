#!/usr/bin/env bash
# LibriSpeech / mini-LibriSpeech (OpenSLR 12 / 31), prepared through lhotse's own recipe, 16 kHz.
# For users who have the corpus (or the internet): nothing of it is in ../shared/corpora.
# usage: ./run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR/LibriSpeech] [--parts "train-clean-5 dev-clean-2"]
set -euo pipefail
cd "$(dirname "$0")"
cmdline=./run.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")   # the exact command, for RESULTS.md
. ../../local/defaults.sh
max_stage=3    # the last stage (local/data_stages.sh)

corpus_dir=download/LibriSpeech
parts="train-clean-5 dev-clean-2"   # mini-LibriSpeech; e.g. "train-clean-100 dev-clean test-clean"
vocab_split=train-clean-5

. ../../local/parse_options.sh
. ../../local/path.sh

corpus=librispeech
splits=$parts
prepare_opts="--parts $parts"
. ../../local/data_stages.sh
