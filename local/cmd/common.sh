# Sourced by local/cmd/run.sh and local/cmd/slurm.sh: their shared command line, as Kaldi's
# utils/run.pl and utils/slurm.pl take it:
#   [options] [NAME=FIRST:LAST | NAME=INDEX] LOGFILE command [args...]
# Sets: max_jobs num_threads mem gpu time_limit extra_opts (options), name first last (the job
# range; name empty for a single job), logfile, cmd (array: the command and its arguments).
max_jobs=0 num_threads=1 mem="" gpu=0 time_limit="" extra_opts=${SLURM_OPTS:-}
prog=$(basename "$0")
die() { echo "$prog: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --max-jobs-run|--num-threads|--mem|--gpu|--time|--sbatch-opts)
      [ $# -ge 2 ] || die "$1 needs a value"
      case $1 in
        --max-jobs-run) max_jobs=$2 ;; --num-threads) num_threads=$2 ;; --mem) mem=$2 ;;
        --gpu) gpu=$2 ;; --time) time_limit=$2 ;; --sbatch-opts) extra_opts="$extra_opts $2" ;;
      esac
      shift 2 ;;
    --) shift; break ;;
    --*) die "unknown option $1" ;;
    *) break ;;
  esac
done
name="" first=1 last=1
if [[ ${1:-} =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+)(:([0-9]+))?$ ]]; then
  name=${BASH_REMATCH[1]} first=${BASH_REMATCH[2]} last=${BASH_REMATCH[4]:-${BASH_REMATCH[2]}}
  shift
  [ "$first" -le "$last" ] || die "empty job range $name=$first:$last"
fi
[ $# -ge 2 ] || die "usage: $prog [options] [JOB=1:N] LOGFILE command [args...]"
logfile=$1; shift
cmd=("$@")
if [ -n "$name" ]; then
  case $logfile in *"$name"*) ;; *) die "the log file $logfile does not contain $name: the jobs would share it" ;; esac
fi

# job_log I: the log file of job I (every $name replaced by I)
job_log() { if [ -n "$name" ]; then echo "${logfile//$name/$1}"; else echo "$logfile"; fi; }
