#!/usr/bin/env bash
# CIFAR-100 generalist + specialists (Hinton, Vinyals & Dean 2015, sections 5 and 6.1):
# a generalist CNN, clusters of confusable classes from the covariance of its predictions,
# dustbin specialists initialised from it, their KL combination at inference (Tables 2-4), and
# full-softmax specialists with the generalist's soft targets (section 6.1).
# usage: ./run.sh [--stage N] [--stop-stage M] [--quick true] [--width 16] [--epochs 10] ...
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
max_stage=6
quick=false          # true: tiny settings (minutes), written to exp/quick/ instead of RESULTS.md here
corpus_dir=          # default: $CORPORA/cifar100 (the shared copy), else downloaded
data_dir=data
exp_dir=exp
width=16             # CNN width; 64-128 on a GPU
epochs=10            # generalist epochs
num_clusters=10      # K of each on-line K-means run
kmeans_runs=2        # runs (seeds) whose clusters together are the specialists
max_specialists=0    # keep the N most confused clusters (0 = all)
spec_epochs=3        # passes over each specialist's special subset
jobs=1               # specialists trained at once
threads=0            # torch threads per process (0 = default)
extra=               # any other options for every asr-kd step, e.g. "--device cuda"

. ../../local/parse_options.sh
. ../../local/path.sh

corpus_dir=${corpus_dir:-$CORPORA/cifar100}
results_dir=.
if [ "$quick" = true ]; then
  exp_dir=$exp_dir/quick
  results_dir=$exp_dir
  extra="$extra --quick"
fi
opts="--data-dir $data_dir --exp-dir $exp_dir --results-dir $results_dir --width $width --epochs $epochs
  --num-clusters $num_clusters --kmeans-runs $kmeans_runs --max-specialists $max_specialists
  --spec-epochs $spec_epochs --jobs $jobs --threads $threads $extra"

if stage_on 0; then
  log "Stage 0: CIFAR-100 in the official cifar-100-python layout ($data_dir)"
  asr-kd specialists prepare --data-dir $data_dir --corpus-dir "$corpus_dir"
fi
if stage_on 1; then
  log "Stage 1: the generalist CNN on all 100 classes"
  asr-kd specialists generalist $opts
fi
if stage_on 2; then
  log "Stage 2: clusters of confusable classes (covariance of predictions + on-line K-means)"
  asr-kd specialists cluster $opts
fi
if stage_on 3; then
  log "Stage 3: dustbin specialists, one per cluster"
  asr-kd specialists specialists --variant dustbin $opts
fi
if stage_on 4; then
  log "Stage 4: KL combination of generalist and specialists (Tables 3 and 4)"
  asr-kd specialists combine $opts
fi
if stage_on 5; then
  log "Stage 5: full-softmax specialists with the generalist's soft targets (section 6.1)"
  asr-kd specialists specialists --variant full-soft $opts
fi
if stage_on 6; then
  log "Stage 6: overfitting of the two kinds of specialists (section 6.1)"
  asr-kd specialists overfit $opts
fi
log "Done: see $results_dir/RESULTS.md"
