#!/usr/bin/env bash
# Stop the training session on every TPU worker (or GPU host); the slice itself stays (delete.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: launch/stop.sh [flags]

On every worker: sends --signal to the session run.sh started (the --restart loop and the training),
found by LOG_DIR/train.pid. On SIGTERM cappy_jax.train saves a checkpoint at the next step and exits,
so a later run.sh resumes from there; KILL stops at once (the last saved checkpoint counts).

  --signal SIG         CAPPY_STOP_SIGNAL   TERM or KILL                  default: TERM

$SHARED_HELP
EOF2
}

SIGNAL=${CAPPY_STOP_SIGNAL:-TERM}
while (($#)); do
  case ${1%%=*} in
    --signal) value_flag "$@"; SIGNAL=$VALUE ;;
    -h | --help) usage; exit 0 ;;
    *) shared_flag "$@" ;;
  esac
  shift "$TOOK"
done

check_target
[[ $SIGNAL =~ ^(TERM|KILL)$ ]] || die "--signal '$SIGNAL': use TERM or KILL"
on_workers "if $(running); then kill -$SIGNAL -- \"-\$(cat $LOG_DIR/train.pid)\"; \
echo \"\$(hostname): sent SIG$SIGNAL to the training session\"; else echo \"\$(hostname): no training runs\"; fi"
