#!/usr/bin/env bash
# speechocean762 (OpenSLR 101): 5000 read English sentences by 250 non-native speakers, 16 kHz,
# train and test speakers disjoint. The main recipe of the paper's speech experiments.
# usage: ./run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR]
set -euo pipefail
cd "$(dirname "$0")"
cmdline=./run.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")   # the exact command, for RESULTS.md
. ../../local/defaults.sh

corpus_dir=          # default: $CORPORA/speechocean762, else downloaded into $download_dir

# acoustic models (stages 4-12). CPU sizes: on this 2-core AVX2-only CPU (fp32) a small-preset DNN
# sees 800k frames (~0.8 passes over train) in ~5 min, a distilled student (4 teachers) in ~13 min;
# on a GPU use e.g. --preset paper --epochs 15 --nnet-opts "--max-frames-per-epoch 0" --num-teachers 10.
mono_gauss=1000
tri_leaves=1000      # picked on dev by ../../local/tune_tri.sh (RESULTS.md: "Triphone system size")
tri_gauss=6000
preset=small
epochs=4
num_teachers=4
temperatures="2 5"   # of the paper's {1, 2, 5, 10}: ~20 min per student on this CPU
subset_epochs=12
nnet_opts="--max-frames-per-epoch 200000 --optimizer adam --lr 0.002"   # Adam starts faster than SGD here
decode_opts="--max-active 3000"   # beam 13 / max-active 3000: same dev WER as 16 / 7000 (GMM), 2.3x faster
test_subset_every=5              # WER on 500 of the 2500 test utterances (CPU decoding time); frame accuracy on all

. ../../local/parse_options.sh
. ../../local/path.sh

corpus=speechocean762
corpus_dir=${corpus_dir:-$CORPORA/speechocean762}
lang_opts="--lexicon $corpus_dir/resource/lexicon.txt"
. ../../local/data_stages.sh
. ../../local/asr_stages.sh
