#!/usr/bin/env bash
# MNIST experiments of Hinton, Vinyals & Dean (2015), section 3: a dropout+jitter teacher, an
# unregularised baseline, a student distilled at T=20, a temperature sweep for small students, and
# transfer sets without 3s / with only 7s and 8s (+ the bias-shift correction). Numbers go to
# RESULTS.md and results.json (written by code).
# usage: ./run.sh [--stage N] [--stop-stage M] [--quick true] [--force true] [--threads N]
#   stages: 0 prepare (verify or download the IDX files), 1 teacher, 2 baseline, 3 distilled,
#           4 temperature sweep + plot, 5 transfer sets without 3s / only 7s and 8s,
#           6 stage wall times into the RESULTS.md notes
set -euo pipefail
cd "$(dirname "$0")"
stage=0
stop_stage=100
max_stage=6
quick=false          # few epochs on a subset; models and RESULTS.md in exp/quick/ (minutes)
force=false          # redo stages whose outputs exist
mnist_dir=           # local directory with the 4 IDX .gz files (default: $CORPORA/mnist)
download_dir=        # where to download them when mnist_dir lacks them (default: $exp_dir/download)
threads=1            # torch threads; 1 is faster than 2 on a busy 2-core machine
device=cpu
dtype=auto       # auto: bf16 only where the hardware runs it natively
. ../../local/parse_options.sh
. ../../local/path.sh

mnist_dir=${mnist_dir:-$CORPORA/mnist}
if [ "$quick" = true ]; then
  exp_dir=exp/quick
  opts=(--quick --exp-dir "$exp_dir" --results-dir "$exp_dir")
else
  exp_dir=exp
  opts=(--exp-dir "$exp_dir" --results-dir .)
fi
download_dir=${download_dir:-$exp_dir/download}
opts+=(--threads "$threads" --device "$device" --dtype "$dtype")
[ "$force" = true ] && opts+=(--force)

if stage_on 0; then
  log "Stage 0: verify (or download) the MNIST IDX files"
  asr-kd mnist prepare "${opts[@]}" --mnist-dir "$mnist_dir" --download-dir "$download_dir"
fi
if stage_on 1; then
  log "Stage 1: teacher 784-1200-1200-10 (dropout, max-norm, 2-pixel jitter)"
  asr-kd mnist teacher "${opts[@]}"
fi
if stage_on 2; then
  log "Stage 2: baseline student 784-800-800-10 on hard labels"
  asr-kd mnist baseline "${opts[@]}"
fi
if stage_on 3; then
  log "Stage 3: 800-800 student distilled at T=20"
  asr-kd mnist distill "${opts[@]}"
fi
if stage_on 4; then
  log "Stage 4: temperature sweep, 300-300 and 30-30 students"
  asr-kd mnist sweep "${opts[@]}"
fi
if stage_on 5; then
  log "Stage 5: transfer sets without 3s and with only 7s and 8s, bias shifts"
  asr-kd mnist transfer "${opts[@]}"
fi
if stage_on 6; then
  log "Stage 6: stage wall times into the RESULTS.md notes"
  asr-kd mnist report "${opts[@]}"
fi
log "Done: see $( [ "$quick" = true ] && echo "$exp_dir/" )RESULTS.md"
