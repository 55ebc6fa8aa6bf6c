#!/usr/bin/env bash
# Show the state of the slice (or queued resource) and, with --logs, each worker's training log.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: launch/status.sh [flags]

TPU: gcloud compute tpus tpu-vm describe NAME (state READY, PREEMPTED, ...), or with --spot,
--best-effort or --queued: gcloud compute tpus queued-resources describe QR_ID (WAITING_FOR_RESOURCES,
PROVISIONING, ACTIVE, SUSPENDED after a preemption, FAILED, ...).
With --logs: on every worker (every --gpu-hosts host, where there is nothing to describe), whether a
training session runs, and the last --lines lines of LOG_DIR/train-*.log.

  --logs               CAPPY_LOGS=1        also the workers' logs         default: off (on for GPU hosts)
  --lines N            CAPPY_LOG_LINES     lines of log per worker        default: 20

$SHARED_HELP
EOF2
}

LOGS=$(bool_env CAPPY_LOGS)
LINES=${CAPPY_LOG_LINES:-20}
while (($#)); do
  case ${1%%=*} in
    --logs) switch_flag "$1"; LOGS=1 ;;
    --lines) value_flag "$@"; LINES=$VALUE ;;
    -h | --help) usage; exit 0 ;;
    *) shared_flag "$@" ;;
  esac
  shift "$TOOK"
done

check_target
[[ $LINES =~ ^[0-9]+$ ]] || die "--lines '$LINES' is not a whole number"
if [[ -z $GPU_HOSTS ]]; then
  if ((QUEUED)); then
    run_or_print "${QR[@]}" describe "$QR_ID" "${WHERE[@]}"
  else
    run_or_print "${TPU[@]}" describe "$NAME" "${WHERE[@]}"
  fi
fi
if ((LOGS)) || [[ -n $GPU_HOSTS ]]; then
  on_workers "if $(running); then echo \"\$(hostname): training runs (session \$(cat $LOG_DIR/train.pid))\"; \
else echo \"\$(hostname): no training runs\"; fi; \
tail -n $LINES $LOG_DIR/train-*.log 2>/dev/null || echo \"\$(hostname): no log in $LOG_DIR\""
fi
