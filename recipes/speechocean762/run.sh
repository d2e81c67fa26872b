#!/usr/bin/env bash
# speechocean762 (OpenSLR 101): 5000 read English sentences by 250 non-native speakers, 16 kHz,
# train and test speakers disjoint. The main recipe of the paper's speech experiments.
# usage: ./run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR]
# Stages (--stage N --stop-stage M; each resumes where it stopped, and a stage whose outputs exist
# does nothing):
#   0 find (or download) the corpus        1 lhotse manifests      2 40-dim fbank (+ speed-perturbed train)
#   3 lang (lexicon, L.fst)                4 n-gram LM, G.fst      5 monophone GMM-HMM
#   6 triphone GMM-HMM (decision tree); senone labels of train     7 align dev, test (and train_sp)
#   8 decode the GMMs (LM weight tuned on dev)                     9 DNN teachers (seed 1 is the baseline)
#   10 baseline and ensemble: frame accuracy, WER                  11 distilled students, one per temperature
#   12 the 3%-of-data experiment            13 what distillation buys: size, one-thread decoding speed
# Every stage that measures something writes its rows to RESULTS.md / results.json (report_row);
# shared work is in ../../local/steps/ (decode.sh, align.sh), options shared by every recipe and their
# defaults in ../../local/defaults.sh (./run.sh --help lists them).
set -euo pipefail
cd "$(dirname "$0")"
cmdline=./run.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")   # the exact command, for RESULTS.md
. ../../local/defaults.sh
max_stage=13   # the last stage

corpus_dir=          # default: $CORPORA/speechocean762, else downloaded into $download_dir
prepare_opts="--dev-fraction 0.1"   # 12 of the 125 training speakers as dev (6 made a noisy guide)
speed_perturb="0.9 1.0 1.1"        # the DNNs train on 3 speeds of train (Kaldi's sp), aligned by tri1

# acoustic models (stages 4-13). CPU sizes: the small preset (4 layers) with dropout 0.2 and Adam at 5e-4
# (halved when dev accuracy stalls), chosen on dev by ../../local/tune_dnn.sh (RESULTS.md: "DNN
# training choices (dev)"). Trained for a budget that keeps the whole recipe within ~2.5 h on a
# 2-core CPU: 12 epochs of 1.4M frames, each a fresh random half of the 3-speed training set
# (~6 passes in all; the tune run's 12 full passes cost 2x as much), teachers 2 at a time.
# On a GPU use e.g. --preset paper --hidden-layers "" --num-teachers 10 --nnet-opts "--optimizer adam --lr 0.0005".
mono_gauss=1000
tri_leaves=1000      # picked on dev by ../../local/tune_tri.sh (RESULTS.md: "Triphone system size")
tri_gauss=6000
preset=small
hidden_layers=4      # 4 of the small preset's 512-wide layers, not its 3: lower dev WER and higher dev frame accuracy
                     # (RESULTS.md: "Teacher choices (dev)", teacher-newbob0-4layers); stage 9 58 min, not 45; "" = the preset's
epochs=12
num_teachers=4
temperatures="2"     # the paper's sweep: --temperatures "1 2 5 10" (one student each, sharing the teachers' pass)
subset_epochs=12
nnet_opts="--optimizer adam --lr 0.0005 --dropout 0.2 --max-frames-per-epoch 1400000"
teacher_opts="--newbob-threshold 0"   # teachers (stage 9): halve the rate only when dev accuracy stops
                                     # improving: 0.8 lower dev WER, inside noise (RESULTS.md: "Teacher choices (dev)")
distill_opts="--dropout 0"   # students (stages 11, 12) without dropout: the soft targets regularize; chosen on dev
                             # (RESULTS.md: "Distillation choices (dev)")
dnn_priors=posterior         # each DNN system's own mean posterior as senone priors: lower dev WER than the
                             # alignment's label counts for all three systems (RESULTS.md: "Senone priors (dev)")
decode_opts="--max-active 3000"   # beam 13 / max-active 3000: same dev WER as 16 / 7000 (GMM), 2.3x faster
test_subset_every=1              # WER on every test utterance (set N to score every N-th: faster CPU decoding)

. ../../local/parse_options.sh
. ../../local/path.sh

corpus=speechocean762
corpus_dir=${corpus_dir:-$CORPORA/speechocean762}
lang_opts="--lexicon $corpus_dir/resource/lexicon.txt"

G=data/lm/G_${lm_order}gram.fst
gmm=exp/tri1          # the GMM whose alignment labels the DNNs' frames and whose tree makes HCLG
lang_files="data/lang/phones.txt data/lang/words.txt data/lang/L_disambig.fst"   # stage 3's outputs
fbank_of() { for s; do echo data/fbank/${corpus}_cuts_$s.jsonl.gz data/fbank/feats_$s; done; }  # stage 2's, for SET...
command="cd recipes/$corpus && $cmdline"   # under every row this run writes (report_row)
dnn_train=train; [ -z "$speed_perturb" ] || dnn_train=train_sp   # what the DNNs train on
# torch threads of each of the $nj DNN training jobs of stage 9
dnn_threads=$(( $(nproc) / nj > 0 ? $(nproc) / nj : 1 ))
# where the DNN commands find a set's frames: a cache of all of them, or shards streamed from disk
frames() { if [ "$stream_frames" = true ]; then echo --stream-frames data/shards/$1; else echo --frames-cache data/frames/$1.pt; fi; }
dnn_opts="--cuts data/senones/${corpus}_cuts_$dnn_train.jsonl.gz --dev-cuts data/senones/${corpus}_cuts_dev.jsonl.gz
  --gmm-dir $gmm --preset $preset ${hidden_layers:+--hidden-layers $hidden_layers} --epochs $epochs $(frames $dnn_train) --no-progress $nnet_opts"
teachers=$(seq -s ' ' -f 'exp/dnn_seed%g/final.pt' 1 "$num_teachers")
# Stages 8, 10, 11 and 13 decode with local/steps/decode.sh: dev over the LM-weight grid, then test
# at the weight and penalty dev chose (--tuned-on reads them from decode_dev/decode.json).
decode=(../../local/steps/decode.sh --nj "$nj" --lm-weights "$lm_weights" --word-ins-penalties "$word_ins_penalties"
  --decode-opts "$decode_opts")

if stage_on 0; then
  if [ -e "$corpus_dir" ]; then
    log "Stage 0: $corpus found at $corpus_dir"
  else
    log "Stage 0: $corpus not at $corpus_dir; downloading into $download_dir"
    corpus_dir=$(asr-kd download $corpus "$download_dir" $download_opts | tail -n 1)
  fi
fi

if stage_on 1; then
  # Not found where expected: use (or fetch) the copy in $download_dir; a no-op when it is there.
  [ -e "$corpus_dir" ] || corpus_dir=$(asr-kd download $corpus "$download_dir" $download_opts | tail -n 1)
  log "Stage 1: lhotse manifests for $corpus from $corpus_dir"
  asr-kd prepare $corpus "$corpus_dir" data/manifests $prepare_opts
fi

if stage_on 2; then
  need "1 (manifests)" data/manifests/${corpus}_cuts_{train,dev,test}.jsonl.gz
  log "Stage 2: 40-dim fbank"
  asr-kd fbank data/manifests data/fbank --corpus $corpus --splits train dev test --num-jobs $nj
  if [ -n "$speed_perturb" ]; then
    log "Stage 2: speed-perturbed copies of train (factors $speed_perturb) for the DNNs, and their fbank"
    asr-kd perturb data/manifests/${corpus}_cuts_train.jsonl.gz data/manifests/${corpus}_cuts_train_sp.jsonl.gz \
      --factors $speed_perturb
    asr-kd fbank data/manifests data/fbank --corpus $corpus --splits train_sp --num-jobs $nj
  fi
fi

if stage_on 3; then
  need "1 (manifests)" data/manifests/${corpus}_cuts_train.jsonl.gz
  log "Stage 3: lang (lexicon, phones, words, L.fst)"
  # shellcheck disable=SC2086
  asr-kd lang data/lang --vocab-cuts data/manifests/${corpus}_cuts_train.jsonl.gz \
    --report-cuts dev=data/manifests/${corpus}_cuts_dev.jsonl.gz test=data/manifests/${corpus}_cuts_test.jsonl.gz \
    $lang_opts
fi

if stage_on 4; then
  need "1 (manifests)" data/manifests/${corpus}_cuts_{train,dev}.jsonl.gz
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
    --out-cuts data/senones/${corpus}_cuts_train.jsonl.gz
fi

if stage_on 7; then
  need "6 (triphones)" $gmm/final.mdl
  need "2 (features)" $(fbank_of dev test ${speed_perturb:+train_sp})
  log "Stage 7: forced alignment of dev and test (senone labels for frame accuracy)"
  for s in dev test; do
    ../../local/steps/align.sh --nj $nj --cmd "$cmd" data/lang $gmm data/fbank/${corpus}_cuts_$s.jsonl.gz \
      ${gmm}_ali_$s data/senones/${corpus}_cuts_$s.jsonl.gz
  done
  if [ -n "$speed_perturb" ]; then  # each speed's copy gets its own alignment by the triphone GMM
    ../../local/steps/align.sh --nj $nj --cmd "$cmd" data/lang $gmm data/fbank/${corpus}_cuts_train_sp.jsonl.gz \
      ${gmm}_ali_train_sp data/senones/${corpus}_cuts_train_sp.jsonl.gz
  fi
  asr-kd gmm report --recipe-dir . --model-dirs exp/mono $gmm --align-dirs gmm-tri:dev:${gmm}_ali_dev \
    gmm-tri:test:${gmm}_ali_test --command "$command"
fi

if stage_on 8; then
  need "3 (lang)" $lang_files
  need "4 (LM)" $G
  need "5 (monophones)" exp/mono/final.mdl
  need "6 (triphones)" $gmm/final.mdl
  need "2 (features)" $(fbank_of dev test)
  log "Stage 8: decode and score the GMM systems (LM weight tuned on dev)"
  for m in mono tri1; do
    "${decode[@]}" data/lang $G data/fbank/${corpus}_cuts_dev.jsonl.gz exp/$m/decode_dev exp/$m
    "${decode[@]}" --tuned-on exp/$m/decode_dev --subset-every $test_subset_every data/lang $G \
      data/fbank/${corpus}_cuts_test.jsonl.gz exp/$m/decode_test exp/$m
    report_row "GMM-HMM" gmm-${m%1} dev --decode-dir exp/$m/decode_dev
    report_row "GMM-HMM" gmm-${m%1} test --decode-dir exp/$m/decode_test
  done
fi

if stage_on 9; then
  need "6 (triphones, senone labels)" $gmm/priors.json data/senones/${corpus}_cuts_train.jsonl.gz
  need "7 (alignment of dev, test)" data/senones/${corpus}_cuts_{dev,$dnn_train}.jsonl.gz
  need "2 (features)" $(fbank_of $dnn_train dev)
  log "Stage 9: $num_teachers DNN teachers ($preset preset), seeds 1..$num_teachers, $nj at a time"
  # One job per seed, $nj side by side with a share of the cores each (logs: exp/log/dnn_seed*.log),
  # as Kaldi trains its jobs: no thread of one job waits on another's (small matrices scale poorly).
  # shellcheck disable=SC2086
  ${cmd:-../../local/cmd/run.sh} --max-jobs-run $nj --num-threads $dnn_threads JOB=1:$num_teachers \
    exp/log/dnn_seedJOB.log asr-kd --threads $dnn_threads nnet train $dnn_opts $teacher_opts --exp-dir exp/dnn_seedJOB --seed JOB
fi

table1="Table 1: baseline, ensemble of $num_teachers, distilled (speech, paper section 4)"
paired="Paired bootstrap of the WER differences (test)"   # stages 10, 11: more than the luck of the test set?
paired_fa="Paired bootstrap of the frame-accuracy differences (test)"
gain="Gain recovered by the students (test): bootstrap"  # stage 11
if stage_on 10; then
  need "9 (DNN teachers)" $teachers
  need "7 (alignment of dev, test)" data/senones/${corpus}_cuts_test.jsonl.gz
  need "3 (lang)" $lang_files
  need "4 (LM)" $G
  need "2 (features)" $(fbank_of dev test)
  log "Stage 10: baseline (seed 1) and the $num_teachers-model ensemble: frame accuracy and WER"
  mkdir -p exp/dnn_ensemble
  for entry in $(dnn_systems $num_teachers "" ); do
    IFS=: read -r system dir models <<< "$entry"
    asr-kd nnet eval --models ${models//,/ } --cuts data/senones/${corpus}_cuts_test.jsonl.gz $(frames test) \
      --out $dir/eval_test.json
    priors=$(priors_opt $dir ${models//,/ })
    "${decode[@]}" $priors data/lang $G data/fbank/${corpus}_cuts_dev.jsonl.gz $dir/decode_dev ${models//,/ }
    "${decode[@]}" $priors --tuned-on $dir/decode_dev --subset-every $test_subset_every data/lang $G \
      data/fbank/${corpus}_cuts_test.jsonl.gz $dir/decode_test ${models//,/ }
  done
  report_row "$table1" dnn-baseline test --decode-dir exp/dnn_seed1/decode_test \
    --frame-accuracy exp/dnn_seed1/eval_test.json --summary exp/dnn_seed1/summary.json --paper $paper --note-key table1
  report_row "$table1" dnn-ensemble-$num_teachers test --decode-dir exp/dnn_ensemble/decode_test \
    --frame-accuracy exp/dnn_ensemble/eval_test.json
  [ ! -f $gmm/decode_test/decode.json ] ||   # stage 8's
    paired_row "$paired" "dnn-baseline vs gmm-tri" exp/dnn_seed1/decode_test $gmm/decode_test
  paired_row "$paired" "dnn-ensemble-$num_teachers vs dnn-baseline" exp/dnn_ensemble/decode_test exp/dnn_seed1/decode_test
  paired_row "$paired_fa" "dnn-ensemble-$num_teachers vs dnn-baseline" exp/dnn_ensemble/eval_test.json \
    exp/dnn_seed1/eval_test.json
fi

if stage_on 11; then
  need "9 (DNN teachers)" $teachers
  log "Stage 11: students distilled from the ensemble at T in {$temperatures}, trained together (one teacher pass)"
  # shellcheck disable=SC2086
  asr-kd nnet train $dnn_opts --exp-dir $(printf 'exp/dnn_distilled_T%s ' $temperatures) --seed 101 \
    --teachers $teachers --temperature $temperatures --hard-weight $hard_weight $distill_opts
  for T in $temperatures; do
    dir=exp/dnn_distilled_T$T
    asr-kd nnet eval --models $dir/final.pt --cuts data/senones/${corpus}_cuts_test.jsonl.gz $(frames test) \
      --out $dir/eval_test.json
    priors=$(priors_opt $dir $dir/final.pt)
    "${decode[@]}" $priors data/lang $G data/fbank/${corpus}_cuts_dev.jsonl.gz $dir/decode_dev $dir/final.pt
    "${decode[@]}" $priors --tuned-on $dir/decode_dev --subset-every $test_subset_every data/lang $G \
      data/fbank/${corpus}_cuts_test.jsonl.gz $dir/decode_test $dir/final.pt
    report_row "$table1" dnn-distilled-T$T test --decode-dir $dir/decode_test --frame-accuracy $dir/eval_test.json \
      --summary $dir/summary.json --field temperature=$T hard_weight=$hard_weight
    for other in dnn-baseline:exp/dnn_seed1 dnn-ensemble-$num_teachers:exp/dnn_ensemble; do
      [ ! -f ${other#*:}/decode_test/decode.json ] ||
        paired_row "$paired" "dnn-distilled-T$T vs ${other%%:*}" $dir/decode_test ${other#*:}/decode_test
      [ ! -f ${other#*:}/eval_test.json ] ||
        paired_row "$paired_fa" "dnn-distilled-T$T vs ${other%%:*}" $dir/eval_test.json ${other#*:}/eval_test.json
    done
    gain_row "$gain" dnn-distilled-T$T $dir exp/dnn_seed1 exp/dnn_ensemble
  done
fi

if stage_on 12; then
  need "9 (DNN teachers)" $teachers
  need "10 (baseline)" exp/dnn_seed1/eval_test.json
  pct=$(python -c "print(f'{100 * $subset_fraction:g}')")
  log "Stage 12: ${pct}% of the training data: hard targets (early stopping) vs soft targets (T=$subset_temperature)"
  table5="Table 5: ${pct}% of the training data (paper section 6)"
  # shellcheck disable=SC2086
  asr-kd nnet train $dnn_opts --exp-dir exp/dnn_3pct_hard --seed 201 --subset-fraction $subset_fraction \
    --epochs $subset_epochs --patience 2
  # shellcheck disable=SC2086
  asr-kd nnet train $dnn_opts --exp-dir exp/dnn_3pct_soft --seed 201 --subset-fraction $subset_fraction \
    --epochs $subset_epochs --teachers $teachers --temperature $subset_temperature --hard-weight $hard_weight $distill_opts
  for kind in hard soft; do
    dir=exp/dnn_3pct_$kind
    asr-kd nnet eval --models $dir/final.pt --cuts data/senones/${corpus}_cuts_$dnn_train.jsonl.gz \
      $(frames $dnn_train) --subset-fraction $subset_fraction --out $dir/eval_train.json
    asr-kd nnet eval --models $dir/final.pt --cuts data/senones/${corpus}_cuts_test.jsonl.gz $(frames test) \
      --out $dir/eval_test.json
    report_row "$table5" dnn-3pct-$kind train --frame-accuracy $dir/eval_train.json --summary $dir/summary.json \
      --paper $paper --note-key table5
    report_row "$table5" dnn-3pct-$kind test --frame-accuracy $dir/eval_test.json
  done
  asr-kd nnet eval --models exp/dnn_seed1/final.pt --cuts data/senones/${corpus}_cuts_$dnn_train.jsonl.gz \
    $(frames $dnn_train) --out exp/dnn_seed1/eval_train.json
  report_row "$table5" dnn-baseline train --frame-accuracy exp/dnn_seed1/eval_train.json
  report_row "$table5" dnn-baseline test --frame-accuracy exp/dnn_seed1/eval_test.json
fi

if stage_on 13; then
  need "10 (baseline, ensemble decoded on dev)" exp/dnn_{seed1,ensemble}/decode_dev/decode.json
  log "Stage 13: what distillation buys: parameters and one-thread decoding speed on dev, ensemble vs students"
  table13="What distillation buys: size, speed and WER"
  for entry in $(dnn_systems $num_teachers "$temperatures"); do
    IFS=: read -r system dir models <<< "$entry"
    [ -f "$dir/decode_test/decode.json" ] || { log "$system: not decoded yet (stages 10-11); skipped"; continue; }
    priors=$(priors_opt $dir ${models//,/ })
    "${decode[@]}" $priors --nj 1 --threads 1 --tuned-on $dir/decode_dev \
      data/lang $G data/fbank/${corpus}_cuts_dev.jsonl.gz $dir/decode_dev_1thread ${models//,/ }
    report_row "$table13" $system test --decode-dir $dir/decode_test --speed-dir $dir/decode_dev_1thread --paper $paper --note-key table13
  done
fi
