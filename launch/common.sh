# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings below are read by the scripts that source this file
# Shared by launch/*.sh: the settings every script takes (flags or CAPPY_* environment variables,
# a flag wins), --dry-run printing, quoting. Sourced, never run.

if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404)); then
  echo "launch/*.sh need bash 4.4 or newer (this is $BASH_VERSION; on macOS: brew install bash)" >&2
  exit 2
fi
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "$(basename "$0"): $*" >&2; exit 2; }
warn() { echo "$(basename "$0"): warning: $*" >&2; }

# bool_env NAME: the value of environment variable NAME as 0 or 1 (unset or empty: 0).
bool_env() {
  case ${!1:-0} in
    0 | false | no) echo 0 ;;
    1 | true | yes) echo 1 ;;
    *) die "$1=${!1} is not a boolean: use 1 or 0" ;;
  esac
}

# require VALUE FLAG ENV WHAT: stop with a message naming both ways to give a missing setting.
require() {
  [[ -n $1 ]] || die "missing $2 (or environment variable $3): $4"
}

# quote ARG: ARG as one shell word for this machine: untouched when plain, else in single quotes (of a
# --flag=VALUE, only the VALUE). Used instead of printf %q, whose backslashes would make the long remote
# commands of --dry-run unreadable; the guarantee is the same: the shell reads back exactly ARG.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
    printf '%s' "$1"
  elif [[ $1 =~ ^(--[A-Za-z0-9-]+=)(.*)$ ]]; then
    printf '%s%s' "${BASH_REMATCH[1]}" "$(quote "${BASH_REMATCH[2]}")"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# rquote ARG: ARG as one word for the remote shell, in double quotes when not plain, so that the remote
# command (single-quoted by quote) prints without nested quote escapes.
rquote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
    printf '%s' "$1"
  else
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//\$/\\\$}
    s=${s//\`/\\\`}
    printf '"%s"' "$s"
  fi
}

# quote_all ARGS...: the words quoted and joined by spaces: one shell command line.
quote_all() {
  local words=() a
  for a in "$@"; do words+=("$(quote "$a")"); done
  echo "${words[*]}"
}

# run_or_print CMD...: with --dry-run print CMD as one copy-pastable line, else run it.
run_or_print() {
  if ((DRY_RUN)); then quote_all "$@"; else "$@"; fi
}

# Paths on the workers and hosts are written into remote shell commands unquoted, so that the remote
# shell expands ~ and $HOME; hence no spaces or shell syntax in them.
remote_path() {
  [[ $2 =~ ^[A-Za-z0-9_./~\${}+-]+$ ]] || die "$1 '$2' has characters a remote path here cannot have (spaces, quotes, ;&|...)"
}

# ---------------------------------------------------------------- settings shared by every script
NAME=${CAPPY_TPU_NAME:-}
ZONE=${CAPPY_ZONE:-}
PROJECT=${CAPPY_PROJECT:-}
SPOT=$(bool_env CAPPY_SPOT)
BEST_EFFORT=$(bool_env CAPPY_BEST_EFFORT)
QUEUED=$(bool_env CAPPY_QUEUED)
QR_ID=${CAPPY_QR_ID:-}
GPU_HOSTS=${CAPPY_GPU_HOSTS:-}
# shellcheck disable=SC2088  # the ~ is meant for the remote shell
REMOTE_DIR=${CAPPY_REMOTE_DIR:-'~/cappy_jax'}
# shellcheck disable=SC2088
VENV=${CAPPY_VENV:-'~/cappy_venv'}
# shellcheck disable=SC2088
LOG_DIR=${CAPPY_LOG_DIR:-'~/cappy_logs'}
DRY_RUN=$(bool_env CAPPY_DRY_RUN)

SHARED_HELP='Shared by every script (a flag wins over its environment variable; switches: VAR=1 or 0):
  --name NAME          CAPPY_TPU_NAME      TPU VM (node) name                    required for a TPU
  --zone ZONE          CAPPY_ZONE          e.g. us-central2-b                    required for a TPU
  --project PROJECT    CAPPY_PROJECT       Google Cloud project                  required for a TPU
  --spot               CAPPY_SPOT=1        queued resource, Spot tier            default: off
  --best-effort        CAPPY_BEST_EFFORT=1 queued resource, best-effort tier     default: off
                                           (gcloud alpha)
  --queued             CAPPY_QUEUED=1      queued resource, no tier flag         default: off
  --qr-id ID           CAPPY_QR_ID         queued resource id                    default: NAME
  --gpu-hosts H0,H1    CAPPY_GPU_HOSTS     GPU machines ([user@]host) over ssh   default: none (a TPU)
  --remote-dir DIR     CAPPY_REMOTE_DIR    the code on the workers               default: ~/cappy_jax
  --venv DIR           CAPPY_VENV          Python environment on the workers     default: ~/cappy_venv
  --log-dir DIR        CAPPY_LOG_DIR       train-*.log, train.pid on the workers default: ~/cappy_logs
                       (paths on the workers are expanded by their shell: ~ works, spaces do not)
  --dry-run            CAPPY_DRY_RUN=1     print the commands, one a line; run nothing
  -h, --help'

# shared_flag ARGS...: takes the shared flag at $1 (its value at $2); sets TOOK to the number of words
# used. Both --flag VALUE and --flag=VALUE work.
shared_flag() {
  local flag=${1%%=*} value
  if [[ $1 == *=* ]]; then value=${1#*=}; TOOK=1; else value=${2-}; TOOK=2; fi
  case $flag in
    --name | --zone | --project | --qr-id | --gpu-hosts | --remote-dir | --venv | --log-dir)
      [[ $TOOK == 1 || $# -ge 2 ]] || die "$flag needs a value (see --help)" ;;
    --spot | --best-effort | --queued | --dry-run)
      [[ $1 != *=* ]] || die "$flag takes no value (see --help)"; TOOK=1 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  case $flag in
    --name) NAME=$value ;;
    --zone) ZONE=$value ;;
    --project) PROJECT=$value ;;
    --qr-id) QR_ID=$value ;;
    --gpu-hosts) GPU_HOSTS=$value ;;
    --remote-dir) REMOTE_DIR=$value ;;
    --venv) VENV=$value ;;
    --log-dir) LOG_DIR=$value ;;
    --spot) SPOT=1 ;;
    --best-effort) BEST_EFFORT=1 ;;
    --queued) QUEUED=1 ;;
    --dry-run) DRY_RUN=1 ;;
  esac
}

# value_flag ARGS...: the value of the script's own flag at $1 (--flag VALUE or --flag=VALUE); sets TOOK.
value_flag() {
  if [[ $1 == *=* ]]; then VALUE=${1#*=}; TOOK=1
  elif (($# >= 2)); then VALUE=$2; TOOK=2
  else die "$1 needs a value (see --help)"; fi
}

# switch_flag ARG: checks that the script's own on/off flag ARG has no =VALUE; sets TOOK.
switch_flag() {
  [[ $1 != *=* ]] || die "${1%%=*} takes no value (see --help)"
  TOOK=1
}

# check_target: after parsing: the remote paths; then HOSTS (GPU hosts), or the required TPU settings and
# the gcloud command heads TPU, QR and WHERE.
check_target() {
  remote_path --remote-dir "$REMOTE_DIR"
  remote_path --venv "$VENV"
  remote_path --log-dir "$LOG_DIR"
  if [[ -n $GPU_HOSTS ]]; then
    [[ $GPU_HOSTS =~ ^[A-Za-z0-9_.@-]+(,[A-Za-z0-9_.@-]+)*$ ]] ||
      die "--gpu-hosts '$GPU_HOSTS': give [user@]host names separated by commas, e.g. --gpu-hosts=gpu-0,gpu-1"
    IFS=, read -r -a HOSTS <<<"$GPU_HOSTS"
    return
  fi
  require "$NAME" --name CAPPY_TPU_NAME "the TPU VM's name, e.g. --name=cappy-v4-32"
  require "$ZONE" --zone CAPPY_ZONE "the TPU's zone, e.g. --zone=us-central2-b"
  require "$PROJECT" --project CAPPY_PROJECT "the Google Cloud project, e.g. --project=my-project"
  ((SPOT + BEST_EFFORT <= 1)) || die "--spot and --best-effort exclude each other: pick one tier"
  if ((SPOT || BEST_EFFORT)); then QUEUED=1; fi
  QR_ID=${QR_ID:-$NAME}
  # --best-effort exists only in `gcloud alpha compute tpus queued-resources create`.
  if ((BEST_EFFORT)); then QR=(gcloud alpha compute tpus queued-resources); else QR=(gcloud compute tpus queued-resources); fi
  TPU=(gcloud compute tpus tpu-vm)
  WHERE=("--zone=$ZONE" "--project=$PROJECT")
}

# on_workers COMMAND: run the shell COMMAND on every TPU worker or on every GPU host.
on_workers() {
  if [[ -n $GPU_HOSTS ]]; then
    local host
    for host in "${HOSTS[@]}"; do run_or_print ssh "$host" "$1"; done
  else
    run_or_print "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all "--command=$1"
  fi
}

# running: the remote shell test "a training session runs here", from the pid file run.sh writes (the
# session's id: setsid makes the training loop a session and process group leader).
running() {
  echo "[ -f $LOG_DIR/train.pid ] && kill -0 -- \"-\$(cat $LOG_DIR/train.pid)\" 2>/dev/null"
}
