#!/usr/bin/env bash
# Start `python -m cappy_jax.train` on every TPU worker (or GPU host), detached, one log per worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: launch/run.sh [flags] [-- more cappy_jax.train flags, e.g. --config.num_steps=1000]

On every worker (gcloud compute tpus tpu-vm ssh --worker=all; ssh to each --gpu-hosts host), in
--remote-dir, detached (setsid nohup, survives the ssh session):
  VENV/bin/python -m cappy_jax.train --config=CONFIG --workdir=WORKDIR [--config.data.dir=DATA] [...]
appending to LOG_DIR/train-\$(hostname).log (GPU hosts: LOG_DIR/train-<process id>.log); the session
id goes to LOG_DIR/train.pid, which status.sh and stop.sh read. A worker where a session still runs is
left as it is, so re-running run.sh restarts only the workers that lost theirs (e.g. after a reboot).
Re-running the same command resumes from the last checkpoint in WORKDIR.

With --restart, a loop re-launches the command when it exits non-zero (a crash, a lost peer), after
--restart-delay seconds, at most --max-restarts times; each launch resumes from the last checkpoint.
Exit status 0 (done, or stopped after SIGTERM with a checkpoint) ends the loop.

With --gpu-hosts H0,H1,...: process i runs on host i with
  --coordinator_address=COORDINATOR_HOST:COORDINATOR_PORT --num_processes=N --process_id=i

  --config C           CAPPY_CONFIG            e.g. configs/pretrain.py:large      required
  --workdir W          CAPPY_WORKDIR           checkpoints, metrics; gs://... when several
                                              workers (all must see it)           required
  --data-dir D         CAPPY_DATA_DIR          adds --config.data.dir=D            default: none
  --restart            CAPPY_RESTART=1         re-launch on a non-zero exit        default: on with
  --no-restart         CAPPY_RESTART=0         no re-launch                        --spot/--best-effort
  --max-restarts N     CAPPY_MAX_RESTARTS                                          default: 20
  --restart-delay S    CAPPY_RESTART_DELAY     seconds                             default: 60
  --coordinator-host H CAPPY_COORDINATOR_HOST  GPU hosts: process 0's host as the others reach it
                                              default: the first --gpu-hosts host, without user@
  --coordinator-port P CAPPY_COORDINATOR_PORT  GPU hosts: a free TCP port on it; default: 8476

$SHARED_HELP
EOF
}

CONFIG=${CAPPY_CONFIG:-}
WORKDIR=${CAPPY_WORKDIR:-}
DATA_DIR=${CAPPY_DATA_DIR:-}
RESTART=${CAPPY_RESTART:+$(bool_env CAPPY_RESTART)}
MAX_RESTARTS=${CAPPY_MAX_RESTARTS:-20}
RESTART_DELAY=${CAPPY_RESTART_DELAY:-60}
COORDINATOR=${CAPPY_COORDINATOR_HOST:-}
PORT=${CAPPY_COORDINATOR_PORT:-8476}
EXTRA=()
while (($#)); do
  case ${1%%=*} in
    --config) value_flag "$@"; CONFIG=$VALUE ;;
    --workdir) value_flag "$@"; WORKDIR=$VALUE ;;
    --data-dir) value_flag "$@"; DATA_DIR=$VALUE ;;
    --restart) switch_flag "$1"; RESTART=1 ;;
    --no-restart) switch_flag "$1"; RESTART=0 ;;
    --max-restarts) value_flag "$@"; MAX_RESTARTS=$VALUE ;;
    --restart-delay) value_flag "$@"; RESTART_DELAY=$VALUE ;;
    --coordinator-host) value_flag "$@"; COORDINATOR=$VALUE ;;
    --coordinator-port) value_flag "$@"; PORT=$VALUE ;;
    -h | --help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) shared_flag "$@" ;;
  esac
  shift "$TOOK"
done

check_target
require "$CONFIG" --config CAPPY_CONFIG "the training config, e.g. --config=configs/pretrain.py:large"
require "$WORKDIR" --workdir CAPPY_WORKDIR "where checkpoints go, e.g. --workdir=gs://my-bucket/cappy-large"
[[ -n $RESTART ]] || RESTART=$((SPOT || BEST_EFFORT))
[[ $MAX_RESTARTS =~ ^[0-9]+$ ]] || die "--max-restarts '$MAX_RESTARTS' is not a whole number"
[[ $RESTART_DELAY =~ ^[0-9]+$ ]] || die "--restart-delay '$RESTART_DELAY' is not a whole number of seconds"
[[ $PORT =~ ^[0-9]+$ ]] || die "--coordinator-port '$PORT' is not a port number"
if [[ $WORKDIR != gs://* ]] && [[ -z $GPU_HOSTS || ${#HOSTS[@]} -gt 1 ]]; then
  warn "--workdir $WORKDIR is not in gs://: with several workers, every one must see the same workdir"
fi

# remote_command LOG_NAME TRAIN_ARGS...: the shell line that starts the detached session on a worker.
remote_command() {
  local log=$LOG_DIR/$1 words=() a
  shift
  for a in "$@"; do words+=("$(rquote "$a")"); done
  # shellcheck disable=SC2016  # $(date) is for the worker's shell
  local train="$VENV/bin/python -m cappy_jax.train ${words[*]}" stamp='$(date -u +%FT%TZ) [launch]' loop
  if ((RESTART)); then
    loop="n=0; until $train; do s=\$?; n=\$((n + 1)); if [ \$n -gt $MAX_RESTARTS ]; then"
    loop+=" echo \"$stamp exit status \$s; gave up after $MAX_RESTARTS restarts\"; exit \$s; fi;"
    loop+=" echo \"$stamp exit status \$s; restart \$n of $MAX_RESTARTS in $RESTART_DELAY s, from the last checkpoint\";"
    loop+=" sleep $RESTART_DELAY; done; echo \"$stamp exit status 0\""
  else
    loop="$train; echo \"$stamp exit status \$?\""
  fi
  echo "mkdir -p $LOG_DIR; if $(running); then echo \"\$(hostname): training already runs here (launch/stop.sh stops it)\";" \
    "else cd $REMOTE_DIR || exit 1; setsid nohup bash -c $(rquote "$loop") >> $log 2>&1 < /dev/null &" \
    "echo \$! > $LOG_DIR/train.pid; echo \"\$(hostname): training started, log: $log\"; fi"
}

TRAIN=("--config=$CONFIG" "--workdir=$WORKDIR")
[[ -z $DATA_DIR ]] || TRAIN+=("--config.data.dir=$DATA_DIR")
if [[ -n $GPU_HOSTS ]]; then
  COORDINATOR=${COORDINATOR:-${HOSTS[0]#*@}}
  for i in "${!HOSTS[@]}"; do
    run_or_print ssh "${HOSTS[i]}" "$(remote_command "train-$i.log" "${TRAIN[@]}" \
      "--coordinator_address=$COORDINATOR:$PORT" "--num_processes=${#HOSTS[@]}" "--process_id=$i" "${EXTRA[@]}")"
  done
else
  # TPU VMs: JAX detects the slice itself; --distributed=on asks it to even where no variable says so.
  # shellcheck disable=SC2016  # $(hostname) is for the worker's shell
  on_workers "$(remote_command 'train-$(hostname).log' "${TRAIN[@]}" --distributed=on "${EXTRA[@]}")"
fi
