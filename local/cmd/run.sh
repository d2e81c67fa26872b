#!/usr/bin/env bash
# Run a command as N jobs on this machine, as Kaldi's utils/run.pl does:
#   local/cmd/run.sh [options] JOB=1:N LOGFILE command [args...]
#   local/cmd/run.sh [options] LOGFILE command [args...]        (one job)
# Every occurrence of JOB (or the name given: TASK=1:4) in LOGFILE and in the arguments becomes the
# job's index, inside words too, as in run.pl (ali.JOB.pt, --job JOB/4; also SLURM_ARRAY_JOB_ID!).
# The command runs as its words, without a shell (for a pipe, give bash -c '...'); its
# output goes to its log file, between a header (the command, start time) and an "# Ended (code
# RC)" line. Waits for every job; exit status 0 when all succeeded, else 1, naming the failed logs.
# Options, shared with local/cmd/slurm.sh so that a recipe can switch between the two:
#   --max-jobs-run K   at most K jobs at once (default: all N)
#   --num-threads N --mem M --gpu G --time T --sbatch-opts S   accepted and ignored here
set -u
. "$(dirname "$0")/common.sh"

status_dir=$(mktemp -d "${TMPDIR:-/tmp}/run.sh.XXXXXX")
trap 'rm -rf "$status_dir"' EXIT
trap 'kill $(jobs -p) 2>/dev/null; exit 130' INT TERM

run_job() {  # run_job I: job I, its exit code in $status_dir/I
  local i=$1 log args rc start=$SECONDS
  log=$(job_log "$i")
  if [ -n "$name" ]; then args=("${cmd[@]//$name/$i}"); else args=("${cmd[@]}"); fi
  mkdir -p "$(dirname "$log")"
  { printf '#'; printf ' %q' "${args[@]}"; printf '\n# Started at %s\n' "$(date)"; } > "$log"
  "${args[@]}" >> "$log" 2>&1
  rc=$?
  echo "# Ended (code $rc) at $(date), elapsed time $((SECONDS - start)) seconds" >> "$log"
  echo $rc > "$status_dir/$i"
}

for ((i = first; i <= last; i++)); do
  if [ "$max_jobs" -gt 0 ]; then
    while [ "$(jobs -rp | wc -l)" -ge "$max_jobs" ]; do wait -n; done
  fi
  run_job "$i" &
done
wait

failed=0
for ((i = first; i <= last; i++)); do
  rc=$(cat "$status_dir/$i" 2>/dev/null || echo "?")
  if [ "$rc" != 0 ]; then
    failed=$((failed + 1))
    echo "$prog: job $i failed (code $rc), log is in $(job_log "$i")" >&2
  fi
done
if [ $failed -gt 0 ]; then
  echo "$prog: $failed / $((last - first + 1)) failed, logs in $(job_log '*')" >&2
  exit 1
fi
exit 0
