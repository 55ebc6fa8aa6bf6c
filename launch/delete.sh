#!/usr/bin/env bash
# Delete the TPU VM, or the queued resource together with its TPU VM.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: launch/delete.sh [flags] [-- extra gcloud flags, e.g. --async]

  gcloud compute tpus tpu-vm delete NAME --zone --project
or, with --spot, --best-effort or --queued (its node goes with it: --force):
  gcloud compute tpus queued-resources delete QR_ID --zone --project --force
The workdir in gs:// is not touched.

  --quiet              CAPPY_QUIET=1       no confirmation prompt (gcloud --quiet)   default: off

$SHARED_HELP
EOF2
}

QUIET=$(bool_env CAPPY_QUIET)
EXTRA=()
while (($#)); do
  case ${1%%=*} in
    --quiet) switch_flag "$1"; QUIET=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) shared_flag "$@" ;;
  esac
  shift "$TOOK"
done

[[ -z $GPU_HOSTS ]] || die "--gpu-hosts machines are not created by these scripts, so not deleted either"
check_target
if ((QUIET)); then EXTRA=(--quiet "${EXTRA[@]}"); fi
if ((QUEUED)); then
  run_or_print "${QR[@]}" delete "$QR_ID" "${WHERE[@]}" --force "${EXTRA[@]}"
else
  run_or_print "${TPU[@]}" delete "$NAME" "${WHERE[@]}" "${EXTRA[@]}"
fi
