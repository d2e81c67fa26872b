#!/usr/bin/env bash
# Senone priors, chosen on dev: the hybrid divides each DNN's posteriors by senone priors. The
# recipe's are the GMM alignment's label counts (saved in every model); Kaldi's nnet uses the
# network's own mean posterior over the training frames instead, which differs when the network's
# average output has drifted from the labels (soft targets, dropout, speed perturbation). For each
# trained system (baseline, ensemble, students) this estimates those priors (asr-kd nnet priors),
# decodes dev with them over the LM-weight grid, and writes one row per system and kind of prior to
# RESULTS.md ("Senone priors (dev)") beside the dev decode the recipe already made, and a paired
# bootstrap of the two per system ("Senone priors (dev): paired bootstrap"). Test is not looked at.
# Run from a recipe directory after its stage 11:
#   ../../local/tune_priors.sh [--priors-utterances 1500]
# The recipe's --dnn-priors setting chooses between them (local/defaults.sh).
set -euo pipefail
cmdline=../../local/tune_priors.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")
. ../../local/defaults.sh
corpus=$(basename "$(pwd)")
speed_perturb="0.9 1.0 1.1"   # as the recipe: which training cuts the DNNs saw
num_teachers=4
temperatures="2"
decode_opts="--max-active 3000"
recipe_priors=alignment       # the recipe's --dnn-priors: its decode_dev directories are that kind's
. ../../local/parse_options.sh
. ../../local/path.sh

G=data/lm/G_${lm_order}gram.fst
dnn_train=train; [ -z "$speed_perturb" ] || dnn_train=train_sp   # priors_opt's training frames
table="Senone priors (dev)"
note="Each DNN system decoded on dev with the senone priors its posteriors are divided by: 'alignment' = the GMM alignment's label counts (saved in the model), 'posterior' = the system's own mean posterior over $priors_utterances training utterances (asr-kd nnet priors, as Kaldi's nnet). dev WER at dev's best LM weight and word insertion penalty. The recipe's --dnn-priors is picked from this table (dev only)."
declare -A dirs
for entry in $(dnn_systems "$num_teachers" "$temperatures"); do
  IFS=: read -r system dir models <<< "$entry"
  [ -f "$dir/decode_dev/decode.json" ] || { log "$system: no $dir/decode_dev yet (recipe stages 10-11); skipped"; continue; }
  for kind in alignment posterior; do
    d=$dir/decode_dev; [ $kind = "$recipe_priors" ] || d=$dir/decode_dev_${kind}_priors
    if [ $d != $dir/decode_dev ]; then
      log "$system: dev decoded with the $kind priors"
      priors=$(dnn_priors=$kind priors_opt $dir ${models//,/ })
      # shellcheck disable=SC2086
      asr-kd decode --model ${models//,/ } $priors --lang-dir data/lang --lm $G \
        --cuts data/fbank/${corpus}_cuts_dev.jsonl.gz --out-dir $d \
        --lm-weights $lm_weights --word-ins-penalties $word_ins_penalties --nj "$nj" $decode_opts
    fi
    asr-kd report --table "$table" --system "$system-$kind" --set dev --note "$note" \
      --command "cd recipes/$corpus && $cmdline" --decode-dir "$d" --field priors=$kind
    dirs[$kind]=$d
  done
  # Is the difference more than the luck of the dev utterances? (paired bootstrap by speaker)
  asr-kd report --table "$table: paired bootstrap" --system "$system: posterior vs alignment" --set dev \
    --note "$paired_note" --command "cd recipes/$corpus && $cmdline" --decode-dir "${dirs[posterior]}" \
    --versus "${dirs[alignment]}"
done
