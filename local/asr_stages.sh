# The acoustic-model stages every corpus recipe shares, sourced by recipes/<corpus>/run.sh after
# local/data_stages.sh. Sizes come from the recipe (defaults here suit a small corpus).
#   4 LM + G          5 GMM monophone      6 GMM triphone + training senone labels
#   7 align dev/test (senone labels for frame accuracy)      8 decode + score the GMMs
#   9 DNN teachers (K seeds; seed 1 is the baseline)          10 baseline + ensemble: frame accuracy, WER
#   11 distilled students, one per temperature                12 the 3%-of-data experiment
#   13 what distillation buys: size and one-thread decoding speed of the ensemble vs the students
# Every stage writes its rows into RESULTS.md / results.json through `asr-kd report`.
# Options and their defaults: local/defaults.sh.
G=data/lm/G_${lm_order}gram.fst
gmm=exp/tri1   # the GMM system whose alignment labels the DNNs and whose tree makes HCLG
senones=data/senones
command="cd recipes/$corpus && ${cmdline:-./run.sh}"
lang_files="data/lang/phones.txt data/lang/words.txt data/lang/L_disambig.fst"
fbank_of() { for s; do echo data/fbank/${corpus}_cuts_$s.jsonl.gz data/fbank/feats_$s; done; }  # the feature stage's outputs for SET...

# decode_set SYSTEM_DIR SET MODEL...: decode a set; dev scores every LM weight and word insertion
# penalty, test uses dev's best pair.
# HCLG is cached by asr-kd decode under the GMM that defines the senones (exp/<gmm>/graph_<lm>).
decode_set() {
  local dir=$1 set=$2; shift 2
  local scoring="--lm-weights $lm_weights --word-ins-penalties $word_ins_penalties" subset=1
  if [ "$set" != dev ]; then  # test is decoded at dev's best LM weight and penalty
    subset=$test_subset_every
    [ ! -f "$dir/decode_dev/decode.json" ] || scoring="--tuned-on $dir/decode_dev"
  fi
  # shellcheck disable=SC2086
  asr-kd decode --model "$@" --lang-dir data/lang --lm $G --cuts data/fbank/${corpus}_cuts_$set.jsonl.gz \
    --out-dir $dir/decode_$set $scoring --subset-every $subset --nj $nj $decode_opts
}

# gmm_align SET OUT_DIR: forced alignment of a set by $gmm in $nj parts: local processes (--nj), or,
# with cmd set (../../local/cmd/slurm.sh, or run.sh), one job per part through that wrapper
# (--job JOB/$nj, as Kaldi's $cmd JOB=1:$nj) and a merge; the same ali.pt either way.
gmm_align() {
  local set=$1 out=$2
  local args="--lang-dir data/lang --cuts data/fbank/${corpus}_cuts_$set.jsonl.gz --model-dir $gmm --out-dir $out"
  if [ -z "$cmd" ]; then
    asr-kd gmm align $args --nj $nj
  else
    $cmd JOB=1:$nj $out/log/align.JOB.log asr-kd gmm align $args --job JOB/$nj
    asr-kd gmm align $args --merge-jobs $nj
  fi
}

# report_row TABLE SYSTEM SET [asr-kd report options]
report_row() {
  local table=$1 system=$2 set=$3; shift 3
  asr-kd report --table "$table" --system "$system" --set "$set" --command "$command" "$@"
}

if stage_on 4; then
  need "1 (manifests)" data/manifests/${corpus}_cuts_train.jsonl.gz data/manifests/${corpus}_cuts_dev.jsonl.gz
  need "3 (lang)" $lang_files
  log "Stage 4: ${lm_order}-gram LM from the training transcripts; G.fst"
  asr-kd lm --lang-dir data/lang --train-cuts data/manifests/${corpus}_cuts_train.jsonl.gz \
    --out-dir data/lm --order $lm_order --eval-cuts dev=data/manifests/${corpus}_cuts_dev.jsonl.gz
fi

if stage_on 5; then
  need "3 (lang)" $lang_files
  need "2 (features)" $(fbank_of train)
  log "Stage 5: monophone GMM-HMM (flat start)"
  asr-kd gmm mono --lang-dir data/lang --cuts data/fbank/${corpus}_cuts_train.jsonl.gz \
    --exp-dir exp/mono --max-gauss $mono_gauss --nj $nj $mono_opts
fi

if stage_on 6; then
  need "5 (monophones)" exp/mono/final.mdl exp/mono/ali.pt
  log "Stage 6: triphone GMM-HMM with a decision tree ($tri_leaves leaves); senone labels of train"
  asr-kd gmm tri --lang-dir data/lang --cuts data/fbank/${corpus}_cuts_train.jsonl.gz --ali-dir exp/mono \
    --exp-dir $gmm --num-leaves $tri_leaves --max-gauss $tri_gauss --nj $nj $tri_opts
  asr-kd gmm labels --cuts data/fbank/${corpus}_cuts_train.jsonl.gz --ali-dir $gmm \
    --out-cuts $senones/${corpus}_cuts_train.jsonl.gz
fi

if stage_on 7; then
  need "6 (triphones)" $gmm/final.mdl
  need "2 (features)" $(fbank_of dev test ${speed_perturb:+train_sp})
  log "Stage 7: forced alignment of dev and test (senone labels for frame accuracy)"
  for s in dev test; do
    gmm_align $s ${gmm}_ali_$s
    asr-kd gmm labels --cuts data/fbank/${corpus}_cuts_$s.jsonl.gz --ali-dir ${gmm}_ali_$s \
      --out-cuts $senones/${corpus}_cuts_$s.jsonl.gz
  done
  if [ -n "$speed_perturb" ]; then  # each speed's copy gets its own alignment by the triphone GMM
    gmm_align train_sp ${gmm}_ali_train_sp
    asr-kd gmm labels --cuts data/fbank/${corpus}_cuts_train_sp.jsonl.gz --ali-dir ${gmm}_ali_train_sp \
      --out-cuts $senones/${corpus}_cuts_train_sp.jsonl.gz
  fi
  asr-kd gmm report --recipe-dir . --model-dirs exp/mono $gmm --align-dirs gmm-tri:dev:${gmm}_ali_dev \
    gmm-tri:test:${gmm}_ali_test --command "$command"
fi

if stage_on 8; then
  need "3 (lang)" $lang_files
  need "4 (LM)" $G
  need "5 (monophones)" exp/mono/final.mdl
  need "6 (triphones)" exp/tri1/final.mdl
  need "2 (features)" $(fbank_of dev test)
  log "Stage 8: decode and score the GMM systems (LM weight tuned on dev)"
  for m in mono tri1; do
    decode_set exp/$m dev exp/$m
    decode_set exp/$m test exp/$m
    system=gmm-${m%1}
    report_row "GMM-HMM" $system dev --decode-dir exp/$m/decode_dev
    report_row "GMM-HMM" $system test --decode-dir exp/$m/decode_test
  done
fi

dnn_train=train; [ -z "$speed_perturb" ] || dnn_train=train_sp   # what the DNNs train on
dnn_threads=$(( $(nproc) / nj > 0 ? $(nproc) / nj : 1 ))   # torch threads of each of $nj DNN jobs
frames_of() {  # frames_of SET: where the DNN commands keep a set's frames (a cache file, or shards)
  if [ "$stream_frames" = true ]; then echo --stream-frames data/shards/$1; else echo --frames-cache data/frames/$1.pt; fi
}
dnn_args() {  # the asr-kd nnet train options every DNN of the recipe shares
  echo --cuts $senones/${corpus}_cuts_$dnn_train.jsonl.gz --dev-cuts $senones/${corpus}_cuts_dev.jsonl.gz \
    --gmm-dir $gmm --preset $preset --epochs $epochs $(frames_of $dnn_train) --no-progress $nnet_opts
}
train_dnn() {  # train_dnn "EXP_DIR..." [asr-kd nnet train options]  (one exp dir per --temperature)
  local dir=$1; shift
  # shellcheck disable=SC2046,SC2086
  asr-kd nnet train $(dnn_args) --exp-dir $dir "$@"
}

eval_dnn() {  # eval_dnn OUT_JSON SET [asr-kd nnet eval options] -- MODELS
  local out=$1 set=$2; shift 2
  # shellcheck disable=SC2046
  asr-kd nnet eval --cuts $senones/${corpus}_cuts_$set.jsonl.gz $(frames_of $set) --out $out "$@"
}

teachers=""
for seed in $(seq 1 $num_teachers); do teachers="$teachers exp/dnn_seed$seed/final.pt"; done
table1="Table 1: baseline, ensemble of $num_teachers, distilled (speech, paper section 4)"
note1="Paper (Hinton et al. 2015, Table 1; 2000 h Android voice search, 8x2560 DNNs, 10 models): baseline 58.9% frame accuracy / 10.9% WER, 10-model ensemble 61.1% / 10.7%, distilled single model 60.8% / 10.7%. gain_recovered_pct = (student - baseline) / (ensemble - baseline) frame accuracy."

if stage_on 9; then
  need "6 (triphones, senone labels)" $gmm/priors.json $senones/${corpus}_cuts_train.jsonl.gz
  need "7 (alignment of dev, test)" $senones/${corpus}_cuts_dev.jsonl.gz $senones/${corpus}_cuts_$dnn_train.jsonl.gz
  need "2 (features)" $(fbank_of $dnn_train dev)
  log "Stage 9: $num_teachers DNN teachers ($preset preset), seeds 1..$num_teachers, $nj at a time"
  # One job per seed, $nj side by side with a share of the cores each (logs: exp/log/dnn_seed*.log),
  # as Kaldi trains its jobs: no thread of one job waits on another's (small matrices scale poorly).
  # shellcheck disable=SC2046
  ${cmd:-../../local/cmd/run.sh} --max-jobs-run $nj --num-threads $dnn_threads JOB=1:$num_teachers \
    exp/log/dnn_seedJOB.log asr-kd --threads $dnn_threads nnet train $(dnn_args) --exp-dir exp/dnn_seedJOB --seed JOB
fi

if stage_on 10; then
  need "9 (DNN teachers)" $teachers
  need "7 (alignment of dev, test)" $senones/${corpus}_cuts_test.jsonl.gz
  need "3 (lang)" $lang_files
  need "4 (LM)" $G
  need "2 (features)" $(fbank_of dev test)
  log "Stage 10: baseline (seed 1) and the $num_teachers-model ensemble: frame accuracy and WER"
  eval_dnn exp/dnn_seed1/eval_test.json test --models exp/dnn_seed1/final.pt
  mkdir -p exp/dnn_ensemble
  eval_dnn exp/dnn_ensemble/eval_test.json test --models $teachers
  for s in dev test; do decode_set exp/dnn_seed1 $s exp/dnn_seed1/final.pt; done
  for s in dev test; do decode_set exp/dnn_ensemble $s $teachers; done
  report_row "$table1" dnn-baseline test --decode-dir exp/dnn_seed1/decode_test \
    --frame-accuracy exp/dnn_seed1/eval_test.json --summary exp/dnn_seed1/summary.json --note "$note1"
  report_row "$table1" dnn-ensemble-$num_teachers test --decode-dir exp/dnn_ensemble/decode_test \
    --frame-accuracy exp/dnn_ensemble/eval_test.json
fi

if stage_on 11; then
  need "9 (DNN teachers)" $teachers
  log "Stage 11: students distilled from the ensemble at T in {$temperatures}, trained together (one teacher pass)"
  dirs=""; for T in $temperatures; do dirs="$dirs exp/dnn_distilled_T$T"; done
  train_dnn "$dirs" --seed 101 --teachers $teachers --temperature $temperatures --hard-weight $hard_weight $distill_opts
  for T in $temperatures; do
    dir=exp/dnn_distilled_T$T
    eval_dnn $dir/eval_test.json test --models $dir/final.pt
    for s in dev test; do decode_set $dir $s $dir/final.pt; done
    report_row "$table1" dnn-distilled-T$T test --decode-dir $dir/decode_test --frame-accuracy $dir/eval_test.json \
      --summary $dir/summary.json --field temperature=$T hard_weight=$hard_weight
  done
fi

if stage_on 12; then
  need "9 (DNN teachers)" $teachers
  need "10 (baseline)" exp/dnn_seed1/eval_test.json
  pct=$(python -c "print(f'{100 * $subset_fraction:g}')")
  log "Stage 12: ${pct}% of the training data: hard targets (early stopping) vs soft targets (T=$subset_temperature)"
  table5="Table 5: ${pct}% of the training data (paper section 6)"
  note5="Paper (Table 5; 3% of 2000 h): hard targets 67.3% train / 44.5% test frame accuracy (early stopped), soft targets 65.4% train / 57.0% test; all data, hard targets: 63.4% / 58.9%."
  train_dnn exp/dnn_3pct_hard --seed 201 --subset-fraction $subset_fraction --epochs $subset_epochs --patience 2
  train_dnn exp/dnn_3pct_soft --seed 201 --subset-fraction $subset_fraction --epochs $subset_epochs \
    --teachers $teachers --temperature $subset_temperature --hard-weight $hard_weight $distill_opts
  for kind in hard soft; do
    dir=exp/dnn_3pct_$kind
    eval_dnn $dir/eval_train.json $dnn_train --models $dir/final.pt --subset-fraction $subset_fraction
    eval_dnn $dir/eval_test.json test --models $dir/final.pt
    report_row "$table5" dnn-3pct-$kind train --frame-accuracy $dir/eval_train.json --summary $dir/summary.json \
      --note "$note5"
    report_row "$table5" dnn-3pct-$kind test --frame-accuracy $dir/eval_test.json
  done
  eval_dnn exp/dnn_seed1/eval_train.json $dnn_train --models exp/dnn_seed1/final.pt
  report_row "$table5" dnn-baseline train --frame-accuracy exp/dnn_seed1/eval_train.json
  report_row "$table5" dnn-baseline test --frame-accuracy exp/dnn_seed1/eval_test.json
fi

if stage_on 13; then
  need "10 (baseline, ensemble decoded on dev)" exp/dnn_seed1/decode_dev/decode.json exp/dnn_ensemble/decode_dev/decode.json
  log "Stage 13: what distillation buys: parameters and one-thread decoding speed on dev, ensemble vs students"
  table13="What distillation buys: size, speed and WER"
  note13="The paper's reason to distil is the cost of running an ensemble. parameters: the acoustic model's weights (every member of the ensemble); acoustic_s_per_h / search_s_per_h / total_s_per_h: seconds of one job on one thread to decode an hour of audio (measured on dev, at dev's best LM weight): acoustic model, HCLG search, all; wer: test, from Table 1."
  systems="dnn-baseline:exp/dnn_seed1:exp/dnn_seed1/final.pt dnn-ensemble-$num_teachers:exp/dnn_ensemble:${teachers// /,}"
  for T in $temperatures; do systems="$systems dnn-distilled-T$T:exp/dnn_distilled_T$T:exp/dnn_distilled_T$T/final.pt"; done
  for entry in $systems; do
    IFS=: read -r system dir models <<< "$entry"
    [ -f "$dir/decode_test/decode.json" ] || { log "$system: not decoded yet (stages 10-11); skipped"; continue; }
    # shellcheck disable=SC2086
    asr-kd --threads 1 decode --model ${models//,/ } --lang-dir data/lang --lm $G \
      --cuts data/fbank/${corpus}_cuts_dev.jsonl.gz --out-dir $dir/decode_dev_1thread --tuned-on $dir/decode_dev \
      --nj 1 $decode_opts
    report_row "$table13" $system test --decode-dir $dir/decode_test --speed-dir $dir/decode_dev_1thread --note "$note13"
  done
fi
