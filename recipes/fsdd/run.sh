#!/usr/bin/env bash
# Free Spoken Digit Dataset: 3000 isolated digits, 6 speakers, 8 kHz; one speaker held out for test.
# usage: ./run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--test-speaker NAME]
set -euo pipefail
cd "$(dirname "$0")"
cmdline=./run.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")   # the exact command, for RESULTS.md
. ../../local/defaults.sh
max_stage=13   # the last stage (local/asr_stages.sh)

corpus_dir=          # default: $CORPORA/fsdd, else downloaded into $download_dir
test_speaker=theo

# acoustic models (stages 4-12)
mono_gauss=400
tri_leaves=200
tri_gauss=2000
preset=small
epochs=6
num_teachers=4
distill_opts="--grad-clip 5"   # plain SGD at lr 0.05: bounds the T >= 5 students' first steps (see yesno)

. ../../local/parse_options.sh
. ../../local/path.sh

corpus=fsdd
corpus_dir=${corpus_dir:-$CORPORA/fsdd}
prepare_opts="--test-speaker $test_speaker"
. ../../local/data_stages.sh
. ../../local/asr_stages.sh
