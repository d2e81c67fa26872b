# Sourced by recipe scripts: put the project's venv (made by local/setup.sh) on PATH,
# and define log() and the stage gate used by every run.sh.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$_root/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$_root/.venv/bin/activate"
fi
command -v asr-kd >/dev/null || { echo "asr-kd not found: run local/setup.sh first" >&2; exit 1; }
export PYTHONUNBUFFERED=1
# The shared corpora sit beside the checkout (../shared/corpora) unless CORPORA says otherwise.
CORPORA=${CORPORA:-$(cd "$_root/.." && pwd)/shared/corpora}

log() {
  local fname=${BASH_SOURCE[1]##*/}
  [[ -z "$_stage_now" || -n "$_stage_what" || "$*" != "Stage $_stage_now: "* ]] || _stage_what=${*#Stage $_stage_now: }
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($fname:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# usage: if stage_on N; then ...; fi   (true when stage <= N <= stop_stage; local/parse_options.sh
# has checked that both are stage numbers)
# Every stage that runs is timed, from its start to the next stage's start or the recipe's end, and
# written to RESULTS.md ("Stage timings") when it ends without error (so a run stopped later keeps the
# rows of the stages it finished), one row per stage (a stage run again replaces its row), named by
# the stage's first "Stage N: ..." log line; a run of every stage adds a row for the whole recipe.
# --stage-timings false leaves the table as it is (a rerun that only refreshes tables is not timed).
_stage_now= _stage_t0= _stage_what= _stage_total=0
stage_on() {
  [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ] || return 1
  _stage_end
  _stage_now=$1 _stage_t0=$(date +%s) _stage_what=
}
_stage_end() {  # record the running stage's timing
  [ -n "$_stage_now" ] && [ -n "${corpus:-}" ] || return 0
  local secs=$(($(date +%s) - _stage_t0))
  _stage_row "stage $_stage_now" "$secs" "$_stage_what"
  _stage_total=$((_stage_total + secs)) _stage_now=
}
_stage_row() {  # _stage_row SYSTEM SECONDS WHAT: one row of the "Stage timings" table (unless --stage-timings false)
  [ "${stage_timings:-true}" = true ] || return 0
  local secs=$2 cpu
  cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')
  asr-kd report --table "Stage timings" --system "$1" --set all --command "cd recipes/$corpus && ${cmdline:-./run.sh}" \
    --note "Wall time of each stage in its last run (the command under the table is the last run's), on the machine named in each row." \
    --field "what=${3:--}" "seconds=$secs" "wall=$(printf '%dh%02dm%02ds' $((secs / 3600)) $((secs % 3600 / 60)) $((secs % 60)))" \
    "machine=${cpu:-unknown}, $(nproc) cores" > /dev/null || echo "$0: could not record the stage timings" >&2
}
_stage_report() {
  local rc=$?
  [ "$rc" -eq 0 ] || return "$rc"  # the failed stage is not timed
  _stage_end
  if [ -n "${corpus:-}" ] && [ "$stage" -eq 0 ] && [ -n "${max_stage:-}" ] && [ "$stop_stage" -ge "$max_stage" ]; then
    _stage_row "all stages" "$_stage_total" "the whole recipe, stages 0-$max_stage"
  fi
  return "$rc"
}
trap _stage_report EXIT

# usage: need "3 (lang)" FILE...: a stage's inputs; the first one missing stops the recipe with one
# line naming it and the stage that makes it.
need() {
  local made_by=$1 f; shift
  for f in "$@"; do
    [ -e "$f" ] || { echo "$0: $f not found: run stage $made_by first" >&2; exit 1; }
  done
}

# The speech paper's numbers and the speech tables' notes (report_row ... --paper $paper --note-key table1)
paper=../../local/paper.json

# The note of the paired-bootstrap tables (asr-kd report --versus): the recipes' "Paired bootstrap of
# the WER differences (test)", tune_priors.sh's
paired_note="Each row: the first system against the second on the same utterances. wer_delta: the first's WER minus the second's (points); delta_ci95_lo/hi: the 2.5th and 97.5th percentile of that difference over 10000 sets drawn with replacement from the scored one, by speaker where it has 10 or more (a speaker's utterances are not independent), else by utterance ('resampled'); p_improvement: the % of those sets on which the first system has the lower WER (Bisani & Ney 2004; Kaldi's compute-wer-bootci). An interval that excludes 0 says the difference is more than the luck of which utterances were scored."

paired_frames_note="Each row: the first system against the second on the same test frames (asr-kd nnet eval). frame_accuracy_delta: the first's frame accuracy minus the second's (points); delta_ci95_lo/hi: the 2.5th and 97.5th percentile of that difference over 10000 sets of speakers drawn with replacement (utterances where the set has fewer than 10 speakers: 'resampled'); p_improvement: the % of those sets on which the first system has the higher frame accuracy."
gain_note="The share of the ensemble's gain over the baseline that a student recovers (the paper's measure): (student - baseline) / (ensemble - baseline), in frame accuracy and in WER, on test; ci95_lo/hi: its 2.5th and 97.5th percentile over 10000 sets of test speakers drawn with replacement (a set on which the ensemble gains nothing counts as 0% recovered)."

# usage: paired_row TABLE "A vs B" A B: a paired-bootstrap row on test (A against B), of two decode
# directories (WER) or two asr-kd nnet eval JSONs (frame accuracy). Systems that cannot be compared
# (other utterances: e.g. another --test-subset-every) are logged and skipped: the comparison is a
# supplement, not worth stopping a recipe for.
paired_row() {
  local scored=--decode-dir note=$paired_note
  [[ $3 != *.json ]] || { scored=--frame-accuracy; note=$paired_frames_note; }
  report_row "$1" "$2" test $scored "$3" --versus "$4" --note "$note" ||
    log "$2: no paired bootstrap ($3 and $4 cannot be compared; see above)"
}

# usage: gain_row TABLE SYSTEM STUDENT_DIR BASELINE_DIR ENSEMBLE_DIR: the share of the ensemble's gain
# the student recovers on test, with its interval, in frame accuracy (their eval_test.json) and in WER
# (their decode_test); each where all three have it, else logged and skipped (as paired_row).
gain_row() {
  local table=$1 system=$2 student=$3 baseline=$4 ensemble=$5 measure name file option
  for measure in "frame_accuracy eval_test.json --frame-accuracy" "wer decode_test --decode-dir"; do
    read -r name file option <<< "$measure"
    [ -e "$student/$file" ] && [ -e "$baseline/$file" ] && [ -e "$ensemble/$file" ] || continue
    report_row "$table" "$system ($name)" test $option "$student/$file" --gain-recovered "$baseline/$file" \
      "$ensemble/$file" --note "$gain_note" || log "$system: no bootstrap of the recovered gain in $name (see above)"
  done
}

# usage: report_row TABLE SYSTEM SET [asr-kd report options]: a row of the recipe's RESULTS.md and
# results.json, under the command that made it ($command, set by the recipe)
report_row() {
  local table=$1 system=$2 set=$3; shift 3
  asr-kd report --table "$table" --system "$system" --set "$set" --command "$command" "$@"
}

# usage: priors_opt DIR MODEL...: the decoding option for a DNN system's senone priors ($dnn_priors):
# none for "alignment" (the GMM alignment's label counts, saved in every model), or for "posterior"
# --priors DIR/posterior_priors.json, the system's own mean posterior over $priors_utterances training
# utterances (as Kaldi's nnet), computed first (kept while newer than the models and labels)
priors_opt() {
  local dir=$1; shift
  [ "$dnn_priors" = posterior ] || return 0
  local src="--frames-cache data/frames/$dnn_train.pt"
  [ "$stream_frames" != true ] || src="--stream-frames data/shards/$dnn_train"
  # shellcheck disable=SC2086
  asr-kd nnet priors --models "$@" --cuts data/senones/${corpus}_cuts_$dnn_train.jsonl.gz $src \
    --max-utterances "$priors_utterances" --out $dir/posterior_priors.json >&2
  echo --priors $dir/posterior_priors.json
}

# usage: dnn_systems K "T...": a recipe's DNN systems, one "system:dir:models" line each (models
# comma-separated): the baseline (seed 1), the K-model ensemble, one student per temperature
dnn_systems() {
  local k=$1 temperature
  echo "dnn-baseline:exp/dnn_seed1:exp/dnn_seed1/final.pt"
  echo "dnn-ensemble-$k:exp/dnn_ensemble:$(seq -s, -f 'exp/dnn_seed%g/final.pt' 1 "$k")"
  for temperature in $2; do
    echo "dnn-distilled-T$temperature:exp/dnn_distilled_T$temperature:exp/dnn_distilled_T$temperature/final.pt"
  done
}
