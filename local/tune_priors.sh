#!/usr/bin/env bash
# Senone priors, chosen on dev: the hybrid divides each DNN's posteriors by senone priors. The
# recipe's are the GMM alignment's label counts (saved in every model); Kaldi's nnet uses the
# network's own mean posterior over the training frames instead, which differs when the network's
# average output has drifted from the labels (soft targets, dropout, speed perturbation). For each
# trained system (baseline, ensemble, students) this estimates those priors (asr-kd nnet priors),
# decodes dev with them over the LM-weight grid, and writes one row per system and kind of prior to
# RESULTS.md ("Senone priors (dev)") beside the dev decode the recipe already made. Test is not looked at.
# Run from a recipe directory after its stage 11:
#   ../../local/tune_priors.sh [--max-utterances 1500]
set -euo pipefail
cmdline=../../local/tune_priors.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")
. ../../local/defaults.sh
corpus=$(basename "$(pwd)")
speed_perturb="0.9 1.0 1.1"   # as the recipe: which training cuts the DNNs saw
num_teachers=4
temperatures="2"
max_utterances=1500           # training utterances the mean posterior is taken over (spread over the set)
decode_opts="--max-active 3000"
. ../../local/parse_options.sh
. ../../local/path.sh

G=data/lm/G_${lm_order}gram.fst
train=train; [ -z "$speed_perturb" ] || train=train_sp
table="Senone priors (dev)"
note="Each DNN system decoded on dev with the senone priors its posteriors are divided by: 'alignment' = the GMM alignment's label counts (saved in the model; the recipe's), 'posterior' = the system's own mean posterior over $max_utterances training utterances (asr-kd nnet priors, as Kaldi's nnet). dev WER at dev's best LM weight and word insertion penalty."
for entry in $(dnn_systems "$num_teachers" "$temperatures"); do
  IFS=: read -r system dir models <<< "$entry"
  [ -f "$dir/decode_dev/decode.json" ] || { log "$system: no $dir/decode_dev yet (recipe stages 10-11); skipped"; continue; }
  log "$system: priors from its own mean posterior; dev decoded with them"
  # shellcheck disable=SC2086
  asr-kd nnet priors --models ${models//,/ } --cuts data/senones/${corpus}_cuts_$train.jsonl.gz \
    --frames-cache data/frames/$train.pt --max-utterances "$max_utterances" --out $dir/posterior_priors.json
  # shellcheck disable=SC2086
  asr-kd decode --model ${models//,/ } --priors $dir/posterior_priors.json --lang-dir data/lang --lm $G \
    --cuts data/fbank/${corpus}_cuts_dev.jsonl.gz --out-dir $dir/decode_dev_posterior_priors \
    --lm-weights $lm_weights --word-ins-penalties $word_ins_penalties --nj "$nj" $decode_opts
  for kind in alignment posterior; do
    d=$dir/decode_dev; [ $kind = alignment ] || d=$dir/decode_dev_posterior_priors
    asr-kd report --table "$table" --system "$system-$kind" --set dev --note "$note" \
      --command "cd recipes/$corpus && $cmdline" --decode-dir "$d" --field priors=$kind
  done
done
