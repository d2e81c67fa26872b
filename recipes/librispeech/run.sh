#!/usr/bin/env bash
# LibriSpeech / mini-LibriSpeech (OpenSLR 12 / 31), prepared through lhotse's own recipe, 16 kHz.
# For users who have the corpus (or the internet): nothing of it is in ../shared/corpora (the test
# tests/test_recipe_librispeech.py runs every stage on a tiny directory in the same layout).
# usage: ./run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR/LibriSpeech] [--lexicon FILE]
#                 [--train-part P] [--dev-part P] [--test-part P]
#
# The defaults suit mini-LibriSpeech (train-clean-5: 1519 utterances, 29 speakers, ~5 h; dev-clean-2
# as test; dev is 3 speakers carved from train-clean-5), about the size of speechocean762, so its
# sizes are speechocean762's. For train-clean-100 (251 speakers, 100.6 h, ~36M frames), suggested
# sizes (not yet run with this toolkit; a GPU for the DNNs):
#   ./run.sh --corpus-dir /data/LibriSpeech --lexicon /data/librispeech-lexicon.txt \
#     --train-part train-clean-100 --dev-part dev-clean --test-part test-clean \
#     --mono-gauss 2000 --tri-leaves 4200 --tri-gauss 40000 --nj 16 \
#     --preset paper --epochs 8 --num-teachers 4 --temperatures "2 5" \
#     --nnet-opts "--device cuda --max-frames-per-epoch 0" --decode-opts "--max-active 7000"
# (Kaldi's librispeech s5 ends train-clean-100 at 4200 leaves / 40k Gaussians, tri4b; our only
# triphone system is delta features without LDA/SAT, so leaves and Gaussians may want tuning on dev
# with ../../local/tune_tri.sh.) The DNNs keep all training frames in memory: ~5.8 GB of fp32 fbank
# for 36M frames, per process. Several training parts are concatenated:
# --train-part "train-clean-100 train-clean-360 train-other-500" (960 h; see the README for what that needs).
# Every word of --lexicon enters the vocabulary (L, G, HCLG): librispeech-lexicon.txt's 200k words make a
# far larger HCLG than the training words alone (without --lexicon).
set -euo pipefail
cd "$(dirname "$0")"
cmdline=./run.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")   # the exact command, for RESULTS.md
. ../../local/defaults.sh
max_stage=13   # the last stage (local/asr_stages.sh)

corpus_dir=download/LibriSpeech   # the LibriSpeech/ directory holding the parts; downloaded (the parts below) if absent
train_part=train-clean-5  # one part or several ("train-clean-100 train-clean-360"), concatenated
dev_part=                 # e.g. dev-clean; empty: dev is carved from the training speakers (--dev-fraction)
test_part=dev-clean-2     # e.g. test-clean (test-other is scored by running again with --test-part test-other)
dev_fraction=0.1          # of the training speakers, when --dev-part is empty
lexicon=                  # e.g. librispeech-lexicon.txt (OpenSLR 11; paths relative to this directory); empty: CMUdict, then letter-to-phone

# acoustic models (stages 4-12): mini-LibriSpeech sizes (see above for train-clean-100)
mono_gauss=1000
tri_leaves=1000
tri_gauss=6000
preset=small
epochs=4
num_teachers=4
temperatures="2 5"
subset_epochs=12
nnet_opts="--max-frames-per-epoch 200000 --optimizer adam --lr 0.002"   # as speechocean762 (CPU)
stream_frames=true   # frames from shards on disk: train-clean-100's 36M frames would take ~6.4 GB in each process
decode_opts="--max-active 3000"

. ../../local/parse_options.sh
. ../../local/path.sh

corpus=librispeech
# each split of the recipe from its parts: librispeech_cuts_{train,dev,test}.jsonl.gz
prepare_opts="--parts train=${train_part// /,} test=${test_part// /,}"
if [ -n "$dev_part" ]; then prepare_opts+=" dev=${dev_part// /,}"; fi
prepare_opts+=" --dev-fraction $dev_fraction"
download_opts="--librispeech-parts ${train_part} ${dev_part} ${test_part}"   # stage 0, when corpus_dir is absent
if [ -n "$lexicon" ]; then
  [ -f "$lexicon" ] || { echo "$0: --lexicon $lexicon: no such file" >&2; exit 1; }
  lang_opts="--lexicon $lexicon"
fi
. ../../local/data_stages.sh
. ../../local/asr_stages.sh
