#!/usr/bin/env bash
# DNN training choices, made on dev: trains one DNN per configuration on the training senone labels
# (early stopping on dev), decodes dev over the LM-weight grid and writes one row each to RESULTS.md
# ("DNN training choices (dev)"): dev WER, dev frame accuracy, and the train accuracy of the same
# epoch (the train/dev gap says how much the net overfits). Test is not looked at.
# Run from a recipe directory after its stage 7 (senone labels of train and dev):
#   ../../local/tune_dnn.sh [--configs "name=options;name=options"] [--preset small] [--jobs 2]
# Configurations are separated by ';', e.g.
#   --configs "base=;drop0.2=--dropout 0.2;specaug=--freq-mask 10 --time-mask 4"
# and may name other training cuts, e.g. "sp=--cuts data/senones/X_cuts_train_sp.jsonl.gz" (stage 7
# with --speed-perturb). "name=@DIR" takes the model DIR/final.pt trained elsewhere (e.g. the recipe's
# exp/dnn_distilled_T2) and decodes and reports it as the others: a reference the others are compared with. Students are configurations too ("--teachers exp/dnn_seed{1..4}/final.pt
# --temperature 2"); --table "Distillation choices (dev)" keeps their rows apart. With --reference DIR
# (a configuration already trained and decoded by an earlier run, e.g. exp/tune_dnn/base) every row is
# also compared with it by a paired bootstrap over the dev speakers: is the difference more than noise?
set -euo pipefail
cmdline=../../local/tune_dnn.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")
. ../../local/defaults.sh
corpus=$(basename "$(pwd)")
preset=small
configs="base=;dropout0.2=--dropout 0.2;specaug=--freq-mask 10 --time-mask 4"
common_opts="--optimizer adam --lr 0.002 --epochs 12 --patience 2 --batch-size 256"  # every configuration's
jobs=1                 # configurations trained at once (each with one torch thread when > 1)
decode_opts="--max-active 3000"
gmm=exp/tri1
table="DNN training choices (dev)"   # the RESULTS.md table the rows go to
reference=             # a model directory decoded on dev (e.g. exp/tune_dnn/base): each configuration is also
                       # compared with it by a paired bootstrap, in "$table: paired bootstrap"
. ../../local/parse_options.sh
. ../../local/path.sh

G=data/lm/G_${lm_order}gram.fst
note="One DNN per configuration ($preset preset unless the options say otherwise; common options: $common_opts), trained on all training frames with early stopping on dev, decoded on dev at dev's best LM weight and word insertion penalty. train/dev_frame_acc_at_best: the exported epoch's accuracy on the training frames it saw (with any augmentation) and on dev. The recipe's DNN options are picked from this table (dev only; test is not looked at)."
mkdir -p data/frames exp/tune_dnn

tune_one() {  # tune_one NAME OPTIONS...
  local name=$1; shift
  local dir=exp/tune_dnn/$name
  # A configuration may train on other cuts (--cuts data/senones/X_cuts_train_sp.jsonl.gz): its own frames cache.
  # and another preset (--preset cpu), which is then the one its row names.
  # Students at several temperatures (--temperature 1 5 10) train together, one teacher pass, into
  # $dir-T1, $dir-T5, ...; each gets its row.
  local cuts=data/senones/${corpus}_cuts_train.jsonl.gz prev= net=$preset temps=() in_temps=false
  for a; do
    [ "$prev" = --cuts ] && cuts=$a
    [ "$prev" = --preset ] && net=$a
    if [ "$a" = --temperature ]; then in_temps=true
    elif [[ $a == --* ]]; then in_temps=false
    elif $in_temps; then temps+=("$a"); fi
    prev=$a
  done
  local cache=data/frames/$(basename "$cuts" .jsonl.gz | sed "s/^${corpus}_cuts_//").pt
  local dirs=("$dir") systems=("dnn-$name") t
  if [ ${#temps[@]} -gt 1 ]; then
    dirs=() systems=()
    for t in "${temps[@]}"; do dirs+=("$dir-T$t"); systems+=("dnn-$name-T$t"); done
  fi
  if [[ ${1:-} == @* ]]; then  # a model trained elsewhere (e.g. by the recipe): decoded and reported as the others
    log "DNN configuration $name: the model in ${1#@} -> $dir"
    mkdir -p $dir
    ln -sfn "$(realpath ${1#@}/final.pt)" $dir/final.pt
    cp ${1#@}/summary.json $dir/summary.json
    : > $dir.log
  else
    log "DNN configuration $name: $* -> ${dirs[*]}"
    asr-kd nnet train --cuts $cuts --dev-cuts data/senones/${corpus}_cuts_dev.jsonl.gz \
      --gmm-dir $gmm --exp-dir "${dirs[@]}" --preset $preset --frames-cache $cache --no-progress \
      $common_opts "$@" > $dir.log 2>&1
  fi
  local i
  for i in "${!dirs[@]}"; do
    asr-kd decode --model ${dirs[$i]}/final.pt --lang-dir data/lang --lm $G \
      --cuts data/fbank/${corpus}_cuts_dev.jsonl.gz --out-dir ${dirs[$i]}/decode_dev --lm-weights $lm_weights \
      --word-ins-penalties $word_ins_penalties $decode_opts >> $dir.log 2>&1
    asr-kd report --table "$table" --system "${systems[$i]}" --set dev --note "$note" \
      --command "cd recipes/$corpus && $cmdline" --decode-dir ${dirs[$i]}/decode_dev --summary ${dirs[$i]}/summary.json \
      --field "options=${*:-(none)}" preset=$net
    if [ -n "$reference" ] && [ "$(realpath "${dirs[$i]}")" != "$(realpath "$reference")" ]; then
      asr-kd report --table "$table: paired bootstrap" --system "${systems[$i]} vs dnn-$(basename "$reference")" --set dev \
        --note "$paired_note" --command "cd recipes/$corpus && $cmdline" --decode-dir ${dirs[$i]}/decode_dev \
        --versus $reference/decode_dev
    fi
  done
}

# Parallel jobs may both build data/frames/train.pt the first time; it is written atomically.
[ -z "$reference" ] || [ -f "$reference/decode_dev/decode.json" ] ||
  { echo "$0: --reference $reference has no decode_dev/decode.json (tune it in an earlier run first)" >&2; exit 1; }
IFS=';' read -ra entries <<< "$configs"
[ "$jobs" -gt 1 ] && export OMP_NUM_THREADS=1
running=0
for entry in "${entries[@]}"; do
  name=${entry%%=*} opts=${entry#*=}
  # shellcheck disable=SC2086
  tune_one "$name" $opts &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
