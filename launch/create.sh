#!/usr/bin/env bash
# Create the TPU VM slice, or request it as a queued resource (--spot, --best-effort, --queued).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: launch/create.sh [flags] [-- extra gcloud flags]

Creates the TPU VM NAME:
  gcloud compute tpus tpu-vm create NAME --zone --project --accelerator-type --version
or, with --spot, --best-effort or --queued, requests it as a queued resource (node NAME):
  gcloud compute tpus queued-resources create QR_ID --node-id=NAME --zone --project
      --accelerator-type --runtime-version [--spot | --best-effort (gcloud alpha)]
Words after -- go to gcloud as they are (e.g. -- --reserved, -- --network=NET --subnetwork=SUB).

  --accelerator-type T CAPPY_ACCELERATOR_TYPE  e.g. v4-32, v5litepod-16, v6e-16    required
  --version V          CAPPY_RUNTIME_VERSION   TPU software version  default: tpu-ubuntu2204-base
                       (v4 and older; v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)

$SHARED_HELP
EOF
}

# Flag names: https://cloud.google.com/sdk/gcloud/reference/compute/tpus/tpu-vm/create and
# .../compute/tpus/queued-resources/create (GA: --spot, --reserved, --guaranteed; --best-effort only in
# .../alpha/compute/tpus/queued-resources/create). Runtime versions: https://cloud.google.com/tpu/docs/runtimes
ACCELERATOR_TYPE=${CAPPY_ACCELERATOR_TYPE:-}
VERSION=${CAPPY_RUNTIME_VERSION:-tpu-ubuntu2204-base}
EXTRA=()
while (($#)); do
  case ${1%%=*} in
    --accelerator-type) value_flag "$@"; ACCELERATOR_TYPE=$VALUE ;;
    --version) value_flag "$@"; VERSION=$VALUE ;;
    -h | --help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) shared_flag "$@" ;;
  esac
  shift "$TOOK"
done

[[ -z $GPU_HOSTS ]] || die "--gpu-hosts machines exist already: go on with launch/setup.sh --gpu-hosts=..."
check_target
require "$ACCELERATOR_TYPE" --accelerator-type CAPPY_ACCELERATOR_TYPE "the slice, e.g. --accelerator-type=v4-32"
require "$VERSION" --version CAPPY_RUNTIME_VERSION "the TPU software version, e.g. --version=tpu-ubuntu2204-base"

if ((QUEUED)); then
  TIER=()
  if ((SPOT)); then TIER=(--spot); elif ((BEST_EFFORT)); then TIER=(--best-effort); fi
  run_or_print "${QR[@]}" create "$QR_ID" "--node-id=$NAME" "${WHERE[@]}" \
    "--accelerator-type=$ACCELERATOR_TYPE" "--runtime-version=$VERSION" "${TIER[@]}" "${EXTRA[@]}"
else
  run_or_print "${TPU[@]}" create "$NAME" "${WHERE[@]}" \
    "--accelerator-type=$ACCELERATOR_TYPE" "--version=$VERSION" "${EXTRA[@]}"
fi
