#!/usr/bin/env bash
# A trained system on data it has never seen: any Kaldi data dir (wav.scp, text, utt2spk) is imported,
# gets a lang on the models' phone set and an LM, and is decoded by every system the source recipe has
# trained (GMM, baseline DNN, ensemble, distilled students) and by any asr-kd export; their WERs go to
# RESULTS.md. By default the foreign set is the Free Spoken Digit Dataset (8 kHz, 6 speakers, the digits
# as words) decoded by recipes/speechocean762's models (16 kHz read English).
# usage: ./run.sh [--stage N] [--stop-stage M] [--data-dir DIR] [--source-recipe DIR] [--model-dirs "DIR..."]
#
#   0 Kaldi data dir of FSDD digits (only without --data-dir)
#   1 import: asr-kd prepare kaldi (resampled to the models' rate; dev: --dev-speakers whole speakers, test: the rest)
#   2 lang on the models' phone set (vocabulary: the dev transcripts and --lexicon)
#   3 LM (--lm-text, else the dev transcripts; never the test transcripts)
#   4 decode: the source's GMM (exp/tri1)            5 decode: the baseline DNN (exp/dnn_seed1)
#   6 decode: the ensemble (exp/dnn_seed1..N)        7 decode: the distilled students (exp/dnn_distilled_T*)
#   8 decode: the exports of --model-dirs
# Each decode stage decodes dev at every LM weight and word insertion penalty, test at dev's best, and
# writes both rows to RESULTS.md; a system the source recipe has not trained (yet) is skipped with a log line.
# Outputs are per set: data/<set>/{manifests,lang,lm}, exp/<set>/<system>/{graph_*,decode_dev,decode_test}
# (<set>: the data dir's name). Nothing is written into the source recipe or the exports.
set -euo pipefail
cd "$(dirname "$0")"
cmdline=./run.sh; [ $# -eq 0 ] || cmdline+=$(printf " %q" "$@")   # the exact command, for RESULTS.md
stage=0
stop_stage=100
max_stage=8
data_dir=                 # a Kaldi data dir (wav.scp, text, utt2spk; paths relative to this directory); empty: FSDD, stage 0
fsdd_takes=10             # stage 0: takes of each digit by each speaker (10: 600 utterances; all: 50)
dev_speakers=2            # whole speakers held out as dev (LM weight and penalty tuned there); the others are test
sampling_rate=16000       # the models' rate: the import resamples the audio to it (speechocean762: 16 kHz)
source_recipe=../speechocean762   # a trained recipe (exp/tri1, exp/dnn_*/final.pt, data/lang); empty: --model-dirs only
num_teachers=4            # the source's ensemble, exp/dnn_seed1..N (decoded when all N exist)
model_dirs=""             # asr-kd export directories (or .tar.gz) to decode too (stage 8), each named after itself
phone_table=""            # the models' phone set; default: <source>/data/lang/phones.txt, else the first export's
lexicon=""                # a primary lexicon: all its words enter the vocabulary (missing words: CMUdict, then spelled)
lm_text=""                # LM training text, one sentence a line; default: the dev transcripts
lm_order=2                # 2 for isolated words (a bigram knows an utterance holds one word), 3 for sentences
lm_opts=""                # extra asr-kd lm options (--smoothing wb, --mix-text FILE, ...)
lm_weights="1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 17 19 21 23"   # scored on dev (test uses dev's best); from 1: a one-word LM needs little weight
word_ins_penalties="0.0 0.5 1.0"
nj=2                      # decoding jobs
decode_opts="--max-active 3000"   # extra asr-kd decode options (as recipes/speechocean762)

. ../../local/parse_options.sh
. ../../local/path.sh

corpus=transfer   # the recipe's directory (RESULTS.md's commands, the stage timings)
# derived from the options (declare: not options themselves, see --help)
declare command="cd recipes/$corpus && $cmdline"
if [ -n "$source_recipe" ]; then
  [ -d "$source_recipe" ] || { echo "$0: --source-recipe $source_recipe: no such directory" >&2; exit 1; }
  source_recipe=$(cd "$source_recipe" && pwd)
fi
[ -n "$source_recipe" ] || [ -n "$model_dirs" ] || { echo "$0: nothing to decode: give --source-recipe or --model-dirs" >&2; exit 1; }
[[ $dev_speakers =~ ^[1-9][0-9]*$ ]] || { echo "$0: --dev-speakers must be 1 or more (the LM weight is tuned on dev, never on test), not '$dev_speakers'" >&2; exit 1; }
[ -z "$lm_text" ] || [ -f "$lm_text" ] || { echo "$0: --lm-text $lm_text: no such file" >&2; exit 1; }
[ -z "$lexicon" ] || [ -f "$lexicon" ] || { echo "$0: --lexicon $lexicon: no such file" >&2; exit 1; }
if [ -z "$phone_table" ]; then
  if [ -n "$source_recipe" ]; then
    phone_table=$source_recipe/data/lang/phones.txt
  else
    first=${model_dirs%% *}
    phone_table=$first/phones.json; [ ! -f "$first/lang/phones.txt" ] || phone_table=$first/lang/phones.txt
  fi
fi
data_dir=${data_dir:-data/fsdd_digits}
declare name; name=$(basename "$data_dir")
declare manifests=data/$name/manifests lang=data/$name/lang lm_dir=data/$name/lm
G=$lm_dir/G_${lm_order}gram.fst
cuts_of() { echo $manifests/${name}_cuts_$1.jsonl.gz; }   # the import's cuts of dev or test (fbank is computed when decoding)
declare by=${source_recipe:+"the systems of $(basename "$source_recipe")"}
[ -z "$model_dirs" ] || by="${by:+$by and }exports"
declare table="Transfer: $name decoded by $by"
declare lm_from=${lm_text:-"the dev transcripts"}
declare note="Data: $data_dir, resampled to $sampling_rate Hz; dev: $dev_speakers whole speakers (named in $manifests/${name}_prepare.json with the entries skipped), test: the other speakers. Vocabulary: the dev transcripts${lexicon:+ and $lexicon}, pronounced on the models' phone set ($phone_table). LM: ${lm_order}-gram${lm_opts:+ ($lm_opts)} from $lm_from (never from the test transcripts), interpolated with a uniform distribution over the vocabulary. LM weight and word insertion penalty: best on dev, applied to test. Models: ${source_recipe:-} ${model_dirs}"

# decode_system SYSTEM [asr-kd decode model options]: dev at every LM weight and penalty, test at dev's
# best; the HCLG is built under exp/<set>/SYSTEM (never in the source recipe); dev and test rows.
decode_system() {
  local system=$1 dir=exp/$name/$1; shift
  need "1 (import)" $(cuts_of dev) $(cuts_of test)
  need "2 (lang)" $lang/words.txt $lang/L_disambig.fst
  need "3 (LM)" $G
  local common="--lang-dir $lang --lm $G --graph-dir $dir/graph_${lm_order}gram --nj $nj $decode_opts"
  # shellcheck disable=SC2086
  asr-kd decode "$@" $common --cuts $(cuts_of dev) --out-dir $dir/decode_dev \
    --lm-weights $lm_weights --word-ins-penalties $word_ins_penalties
  # shellcheck disable=SC2086
  asr-kd decode "$@" $common --cuts $(cuts_of test) --out-dir $dir/decode_test --tuned-on $dir/decode_dev
  report_row "$table" "$system" dev --decode-dir $dir/decode_dev --note "$note"
  report_row "$table" "$system" test --decode-dir $dir/decode_test
}

if stage_on 0; then
  if [ "$data_dir" != data/fsdd_digits ]; then
    log "Stage 0: --data-dir $data_dir given: no FSDD data dir to build"
  elif [ -f data/fsdd_digits/spk2utt ]; then
    log "Stage 0: data/fsdd_digits exists"
  else
    log "Stage 0: Kaldi data dir of FSDD (takes 0-$((fsdd_takes - 1)) of each digit and speaker) from $CORPORA/fsdd"
    local/fsdd_data_dir.sh "$CORPORA/fsdd" $fsdd_takes data/fsdd_digits
  fi
fi

if stage_on 1; then
  log "Stage 1: import $data_dir at $sampling_rate Hz; $dev_speakers speakers as dev, the others as test"
  asr-kd prepare kaldi "$data_dir" $manifests --name "$name" --split test --dev-speakers $dev_speakers \
    --sampling-rate $sampling_rate
fi

if stage_on 2; then
  need "1 (import)" $(cuts_of dev) $(cuts_of test)
  log "Stage 2: lang on the models' phone set ($phone_table)"
  asr-kd lang $lang --vocab-cuts $(cuts_of dev) --report-cuts test=$(cuts_of test) \
    --phone-symbol-table "$phone_table" ${lexicon:+--lexicon "$lexicon"}
fi

if stage_on 3; then
  need "2 (lang)" $lang/words.txt
  log "Stage 3: ${lm_order}-gram LM from $lm_from"
  if [ -n "$lm_text" ]; then lm_src="--text $lm_text"; else lm_src="--train-cuts $(cuts_of dev)"; fi
  # shellcheck disable=SC2086
  asr-kd lm --lang-dir $lang $lm_src --out-dir $lm_dir --order $lm_order --eval-cuts test=$(cuts_of test) $lm_opts
fi

if stage_on 4; then
  log "Stage 4: decode with the GMM (${source_recipe:-no source recipe}/exp/tri1)"
  if [ -n "$source_recipe" ] && [ -f $source_recipe/exp/tri1/final.mdl ]; then
    decode_system gmm-tri --model $source_recipe/exp/tri1
  else
    log "skipped: ${source_recipe:-no source recipe}/exp/tri1/final.mdl not found"
  fi
fi

if stage_on 5; then
  log "Stage 5: decode with the baseline DNN (exp/dnn_seed1)"
  if [ -n "$source_recipe" ] && [ -f $source_recipe/exp/dnn_seed1/final.pt ]; then
    decode_system dnn-baseline --model $source_recipe/exp/dnn_seed1/final.pt
  else
    log "skipped: ${source_recipe:-no source recipe}/exp/dnn_seed1/final.pt not found"
  fi
fi

if stage_on 6; then
  log "Stage 6: decode with the ensemble of $num_teachers DNNs (exp/dnn_seed1..$num_teachers)"
  teachers="" missing=""
  for seed in $(seq 1 $num_teachers); do
    f=$source_recipe/exp/dnn_seed$seed/final.pt
    if [ -n "$source_recipe" ] && [ -f $f ]; then teachers="$teachers $f"; else missing="$missing $f"; fi
  done
  if [ -z "$missing" ] && [ "$num_teachers" -ge 2 ]; then
    # shellcheck disable=SC2086
    decode_system dnn-ensemble-$num_teachers --model $teachers
  else
    log "skipped: not trained (yet):${missing:- fewer than 2 teachers}"
  fi
fi

if stage_on 7; then
  log "Stage 7: decode with the distilled students (exp/dnn_distilled_T*)"
  students=""
  [ -z "$source_recipe" ] || students=$(ls -d $source_recipe/exp/dnn_distilled_T* 2>/dev/null || true)
  [ -n "$students" ] || log "skipped: no ${source_recipe:-source recipe}/exp/dnn_distilled_T*"
  for d in $students; do
    if [ -f $d/final.pt ]; then
      decode_system dnn-distilled-T${d##*_T} --model $d/final.pt
    else
      log "skipped: $d/final.pt not found (still training?)"
    fi
  done
fi

if stage_on 8; then
  log "Stage 8: decode with the exports of --model-dirs${model_dirs:+ ($model_dirs)}"
  [ -n "$model_dirs" ] || log "skipped: no --model-dirs"
  for d in $model_dirs; do
    system=$(basename "$d"); system=${system%.tar.gz}
    decode_system export-$system --model-dir $d
  done
fi
