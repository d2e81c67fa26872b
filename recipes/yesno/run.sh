#!/usr/bin/env bash
# yesno (OpenSLR 1): 60 utterances of 8 Hebrew yes/no words, one speaker, 8 kHz.
# The smallest end-to-end check of the pipeline.
# usage: ./run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--download-dir DIR]
set -euo pipefail
cd "$(dirname "$0")"
cmdline=./run.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")   # the exact command, for RESULTS.md
. ../../local/defaults.sh
max_stage=13   # the last stage (local/asr_stages.sh)

corpus_dir=          # default: $CORPORA/yesno/waves_yesno, else downloaded into $download_dir

# acoustic models (stages 4-12): a quick check of the whole pipeline
mono_gauss=200
tri_leaves=40
tri_gauss=300
preset=small
epochs=4
num_teachers=4
distill_opts="--grad-clip 5"   # plain SGD at lr 0.05: without it the T=5 student's loss overflows in epoch 1

. ../../local/parse_options.sh
. ../../local/path.sh

corpus=yesno
corpus_dir=${corpus_dir:-$CORPORA/yesno/waves_yesno}
prepare_opts="--dev-fraction 0.1"   # 3 of the 30 training files: dev for the LM weight
. ../../local/data_stages.sh
. ../../local/asr_stages.sh
