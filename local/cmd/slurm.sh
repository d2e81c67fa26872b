#!/usr/bin/env bash
# Run a command as a Slurm array job, as Kaldi's utils/slurm.pl does; the same command line as
# local/cmd/run.sh:
#   local/cmd/slurm.sh [options] JOB=1:N LOGFILE command [args...]
# Submits one `sbatch --array=FIRST-LAST --wait` whose task I runs the command with every JOB
# replaced by I (its SLURM_ARRAY_TASK_ID), output in its log file as run.sh writes it, and waits
# for all of them; exit status 0 when every task succeeded, else 1, naming the failed logs (a task
# that never finished, e.g. cancelled or out of time, counts as failed). The submission script and
# Slurm's own output go to LOGDIR/q/. The tasks run in this directory with this environment
# (sbatch's default --export=ALL), so the asr-kd on PATH here is the one they run.
# Options:
#   --max-jobs-run K   at most K tasks at once (--array=...%K)
#   --num-threads N    --cpus-per-task=N (default 1)
#   --mem M            --mem=M (e.g. 4G)
#   --gpu G            --gres=gpu:G
#   --time T           --time=T
#   --sbatch-opts S    more sbatch words (partition, account...); also $SLURM_OPTS
set -u
. "$(dirname "$0")/common.sh"
command -v sbatch > /dev/null || die "sbatch not found: is this a Slurm submit host? (local jobs: local/cmd/run.sh)"

logdir=$(dirname "$logfile")
base=$(basename "$logfile" .log); [ -z "$name" ] || base=${base//$name/}; base=${base//../.}; base=${base%.}; base=${base#.}
qdir=$logdir/q
mkdir -p "$qdir"
script=$qdir/$base.sh
status=$qdir/$base.status
rm -rf "$status"; mkdir -p "$status"
{
  echo '#!/usr/bin/env bash'
  echo "# written by $prog; one Slurm array task per job"
  printf 'cd %q || exit 1\n' "$PWD"
  printf 'i=${SLURM_ARRAY_TASK_ID:-%d}\n' "$first"
  printf 'args=('; printf ' %q' "${cmd[@]}"; printf ' )\n'
  printf 'log=%q\n' "$logfile"
  if [ -n "$name" ]; then
    printf 'args=("${args[@]//%s/$i}")\nlog=${log//%s/$i}\n' "$name" "$name"
  fi
  echo 'mkdir -p "$(dirname "$log")"'
  echo '{ printf "#"; printf " %q" "${args[@]}"; printf "\n# Started at %s on %s (Slurm job %s)\n" "$(date)" "$(hostname)" "${SLURM_ARRAY_JOB_ID:-?}_$i"; } > "$log"'
  echo 'start=$SECONDS'
  echo '"${args[@]}" >> "$log" 2>&1'
  echo 'rc=$?'
  echo 'echo "# Ended (code $rc) at $(date), elapsed time $((SECONDS - start)) seconds" >> "$log"'
  printf 'echo $rc > %q/$i\n' "$status"
  echo 'exit $rc'
} > "$script"
chmod +x "$script"

array=$first-$last; [ "$max_jobs" = 0 ] || array=$array%$max_jobs
opts=(--parsable --wait --job-name "$base" --array "$array" --output "$qdir/$base.%a.out" --cpus-per-task "$num_threads")
[ -z "$mem" ] || opts+=(--mem "$mem")
[ "$gpu" = 0 ] || opts+=(--gres "gpu:$gpu")
[ -z "$time_limit" ] || opts+=(--time "$time_limit")
# shellcheck disable=SC2206
extra=($extra_opts)
sbatch "${opts[@]}" "${extra[@]}" "$script" > "$qdir/$base.jobid"
sbatch_rc=$?

failed=0
for ((i = first; i <= last; i++)); do
  rc=$(cat "$status/$i" 2>/dev/null || echo "none: the task did not finish, see $qdir/$base.$i.out")
  if [ "$rc" != 0 ]; then
    failed=$((failed + 1))
    echo "$prog: job $i failed (code $rc), log is in $(job_log "$i")" >&2
  fi
done
if [ $failed -gt 0 ] || [ $sbatch_rc != 0 ]; then
  echo "$prog: $failed / $((last - first + 1)) failed (sbatch exit $sbatch_rc, Slurm job $(cat "$qdir/$base.jobid" 2>/dev/null)), logs in $(job_log '*')" >&2
  exit 1
fi
exit 0
