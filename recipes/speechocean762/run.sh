#!/usr/bin/env bash
# speechocean762 (OpenSLR 101): 5000 read English sentences by 250 non-native speakers, 16 kHz,
# train and test speakers disjoint. The main recipe of the paper's speech experiments.
# usage: ./run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR]
set -euo pipefail
cd "$(dirname "$0")"
cmdline=./run.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")   # the exact command, for RESULTS.md
. ../../local/defaults.sh
max_stage=13   # the last stage (local/asr_stages.sh)

corpus_dir=          # default: $CORPORA/speechocean762, else downloaded into $download_dir
prepare_opts="--dev-fraction 0.1"   # 12 of the 125 training speakers as dev (6 made a noisy guide)
speed_perturb="0.9 1.0 1.1"        # the DNNs train on 3 speeds of train (Kaldi's sp), aligned by tri1

# acoustic models (stages 4-13). CPU sizes: the small preset with dropout 0.2 and Adam at 5e-4
# (halved when dev accuracy stalls), chosen on dev by ../../local/tune_dnn.sh (RESULTS.md: "DNN
# training choices (dev)"). Trained for a budget that keeps the whole recipe within ~2.5 h on a
# 2-core CPU: 12 epochs of 1.4M frames, each a fresh random half of the 3-speed training set
# (~6 passes in all; the tune run's 12 full passes cost 2x as much), teachers 2 at a time.
# On a GPU use e.g. --preset paper --num-teachers 10 --nnet-opts "--optimizer adam --lr 0.0005".
mono_gauss=1000
tri_leaves=1000      # picked on dev by ../../local/tune_tri.sh (RESULTS.md: "Triphone system size")
tri_gauss=6000
preset=small
epochs=12
num_teachers=4
temperatures="2"     # the paper's sweep: --temperatures "1 2 5 10" (one student each, sharing the teachers' pass)
subset_epochs=12
nnet_opts="--optimizer adam --lr 0.0005 --dropout 0.2 --max-frames-per-epoch 1400000"
decode_opts="--max-active 3000"   # beam 13 / max-active 3000: same dev WER as 16 / 7000 (GMM), 2.3x faster
test_subset_every=1              # WER on every test utterance (set N to score every N-th: faster CPU decoding)

. ../../local/parse_options.sh
. ../../local/path.sh

corpus=speechocean762
corpus_dir=${corpus_dir:-$CORPORA/speechocean762}
lang_opts="--lexicon $corpus_dir/resource/lexicon.txt"
. ../../local/data_stages.sh
. ../../local/asr_stages.sh
