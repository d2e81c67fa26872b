#!/usr/bin/env bash
# Force-align a set with a GMM system and label its frames with senones, as Kaldi's steps/align_si.sh:
#   local/steps/align.sh [options] <lang-dir> <gmm-dir> <cuts> <ali-dir> <labelled-cuts>
# e.g. local/steps/align.sh data/lang exp/tri1 data/fbank/X_cuts_dev.jsonl.gz exp/tri1_ali_dev \
#        data/senones/X_cuts_dev.jsonl.gz
# The set is aligned in --nj parts: local processes, or with --cmd (../../local/cmd/slurm.sh, or
# run.sh) one job per part through that wrapper (--job JOB/nj, as Kaldi's $cmd JOB=1:nj) and a
# merge; the same ali.pt either way. <labelled-cuts>: the cuts with a senone label per frame.
set -euo pipefail
. "$(dirname "$0")/../defaults.sh"   # nj, cmd
positional="<lang-dir> <gmm-dir> <cuts> <ali-dir> <labelled-cuts>"
. "$(dirname "$0")/../parse_options.sh"
. "$(dirname "$0")/../path.sh"
[ $# -eq 5 ] || { echo "usage: $0 [options] $positional (--help: the options)" >&2; exit 1; }
lang_dir=${1} gmm=${2} cuts=${3} out=${4} labelled=${5}

args=(--lang-dir "$lang_dir" --cuts "$cuts" --model-dir "$gmm" --out-dir "$out")
if [ -z "$cmd" ]; then
  asr-kd gmm align "${args[@]}" --nj "$nj"
else
  $cmd JOB=1:"$nj" "$out/log/align.JOB.log" asr-kd gmm align "${args[@]}" --job JOB/"$nj"
  asr-kd gmm align "${args[@]}" --merge-jobs "$nj"
fi
asr-kd gmm labels --cuts "$cuts" --ali-dir "$out" --out-cuts "$labelled"
