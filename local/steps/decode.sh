#!/usr/bin/env bash
# Decode a set and score it, as Kaldi's steps/decode.sh with its local/score.sh:
#   local/steps/decode.sh [options] <lang-dir> <G.fst> <cuts> <decode-dir> <model>...
# e.g.
#   local/steps/decode.sh data/lang data/lm/G_3gram.fst data/fbank/X_cuts_dev.jsonl.gz exp/tri1/decode_dev exp/tri1
#   local/steps/decode.sh --tuned-on exp/tri1/decode_dev data/lang data/lm/G_3gram.fst \
#     data/fbank/X_cuts_test.jsonl.gz exp/tri1/decode_test exp/tri1
# <model>: a GMM directory (exp/tri1) or DNN final.pt files (several: their ensemble). Without
# --tuned-on the set is scored at every LM weight and word insertion penalty of the grid (dev);
# with --tuned-on DIR at the pair chosen on that dev decoding, read from DIR/decode.json (test).
# HCLG is built once and kept under the GMM that defines the senones (exp/<gmm>/graph_<lm>).
set -euo pipefail
. "$(dirname "$0")/../defaults.sh"   # nj, lm_weights, word_ins_penalties, decode_opts
tuned_on=          # a dev decoding directory: score at its best LM weight and penalty
subset_every=1     # decode every K-th utterance only
threads=           # torch threads of the decoding process (asr-kd --threads)
priors=            # DNNs: a JSON of senone log-priors to divide the posteriors by (asr-kd nnet priors)
positional="<lang-dir> <G.fst> <cuts> <decode-dir> <model>..."
. "$(dirname "$0")/../parse_options.sh"
. "$(dirname "$0")/../path.sh"
[ $# -ge 5 ] || { echo "usage: $0 [options] $positional (--help: the options)" >&2; exit 1; }
lang_dir=${1} lm=${2} cuts=${3} out_dir=${4}; shift 4

scoring=(--lm-weights $lm_weights --word-ins-penalties $word_ins_penalties)
[ -z "$tuned_on" ] || scoring=(--tuned-on "$tuned_on")
# exec: the decoder takes this script's process, so killing the step kills the decoding
# shellcheck disable=SC2086
exec asr-kd ${threads:+--threads $threads} decode --model "$@" ${priors:+--priors "$priors"} --lang-dir "$lang_dir" --lm "$lm" --cuts "$cuts" \
  --out-dir "$out_dir" "${scoring[@]}" --subset-every "$subset_every" --nj "$nj" $decode_opts
