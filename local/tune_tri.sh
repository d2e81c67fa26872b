#!/usr/bin/env bash
# Size of the triphone system, chosen on dev: trains one triphone GMM per LEAVES:GAUSSIANS pair from
# the monophone alignment, decodes dev over the LM-weight grid and writes one row each to RESULTS.md.
# Run from a recipe directory after its stage 5 (and stage 4's G.fst):
#   ../../local/tune_tri.sh [--sizes "1000:6000 2000:10000"] [--lm-weights "..."]
set -euo pipefail
cmdline=../../local/tune_tri.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")
. ../../local/defaults.sh
sizes="1000:6000 1500:10000 2000:10000 2000:15000"
corpus=$(basename "$(pwd)")
decode_opts=""
. ../../local/parse_options.sh
. ../../local/path.sh

G=data/lm/G_${lm_order}gram.fst
table="Triphone system size (dev WER)"
note="One triphone GMM per (leaves, Gaussians) from the same monophone alignment; dev WER at dev's best LM weight and word insertion penalty. The recipe's tri_leaves / tri_gauss are picked from this table (dev only; test is not looked at)."
for size in $sizes; do
  leaves=${size%%:*} gauss=${size##*:}
  dir=exp/tune_tri/L${leaves}_G${gauss}
  log "triphone system: $leaves leaves, $gauss Gaussians -> $dir"
  [ -f $dir/final.mdl ] || asr-kd gmm tri --lang-dir data/lang --cuts data/fbank/${corpus}_cuts_train.jsonl.gz \
    --ali-dir exp/mono --exp-dir $dir --num-leaves $leaves --max-gauss $gauss $tri_opts
  asr-kd decode --model $dir --lang-dir data/lang --lm $G --cuts data/fbank/${corpus}_cuts_dev.jsonl.gz \
    --out-dir $dir/decode_dev --lm-weights $lm_weights --word-ins-penalties $word_ins_penalties $decode_opts
  asr-kd report --table "$table" --system "gmm-tri-L${leaves}-G${gauss}" --set dev --note "$note" \
    --command "cd recipes/$corpus && $cmdline" --decode-dir $dir/decode_dev --field leaves=$leaves gaussians=$gauss
done
