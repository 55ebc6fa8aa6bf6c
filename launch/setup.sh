#!/usr/bin/env bash
# Put the code on every TPU worker (or GPU host) and install it with JAX for the accelerator.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: launch/setup.sh [flags]

1. The code: by default \`git archive\` of REF in this checkout (committed files only), copied to every
   worker with \`gcloud compute tpus tpu-vm scp --worker=all\` (scp to each --gpu-hosts host) and
   unpacked into --remote-dir; with --repo, \`git clone\` + checkout of REF on each worker instead.
2. On every worker: apt-get install of --apt-packages, a venv from --python, then
   pip install -e '.[EXTRAS]' 'JAX' (in --remote-dir). Safe to re-run after a new commit.

  --repo URL           CAPPY_REPO          clone this on the workers    default: copy this checkout
  --ref REF            CAPPY_REF           commit, branch or tag        default: HEAD
  --python PY          CAPPY_PYTHON        makes the venv (3.11+)       default: python3.11
  --apt-packages 'P..' CAPPY_APT_PACKAGES  installed first with sudo apt-get ('' for none)
                                           default: 'python3.11 python3.11-venv' on a TPU
                                           (tpu-ubuntu2204-base has Python 3.10), none on GPU hosts
  --jax REQ            CAPPY_JAX           JAX for the accelerator      default: jax[tpu] on a TPU
                                           (libtpu comes from PyPI), jax[cuda12] on GPU hosts
  --extras E           CAPPY_EXTRAS        extras of this package       default: data
  --find-links URL     CAPPY_FIND_LINKS    extra pip -f page            default: none (older JAX
                                           needed https://storage.googleapis.com/jax-releases/libtpu_releases.html)

$SHARED_HELP
EOF
}

REPO=${CAPPY_REPO:-}
REF=${CAPPY_REF:-HEAD}
PYTHON=${CAPPY_PYTHON:-python3.11}
APT_PACKAGES=${CAPPY_APT_PACKAGES-unset}
JAX=${CAPPY_JAX:-}
EXTRAS=${CAPPY_EXTRAS-data}
FIND_LINKS=${CAPPY_FIND_LINKS:-}
while (($#)); do
  case ${1%%=*} in
    --repo) value_flag "$@"; REPO=$VALUE ;;
    --ref) value_flag "$@"; REF=$VALUE ;;
    --python) value_flag "$@"; PYTHON=$VALUE ;;
    --apt-packages) value_flag "$@"; APT_PACKAGES=$VALUE ;;
    --jax) value_flag "$@"; JAX=$VALUE ;;
    --extras) value_flag "$@"; EXTRAS=$VALUE ;;
    --find-links) value_flag "$@"; FIND_LINKS=$VALUE ;;
    -h | --help) usage; exit 0 ;;
    *) shared_flag "$@" ;;
  esac
  shift "$TOOK"
done

check_target
if [[ -n $GPU_HOSTS ]]; then
  [[ $APT_PACKAGES != unset ]] || APT_PACKAGES=
  JAX=${JAX:-jax[cuda12]}
else
  [[ $APT_PACKAGES != unset ]] || APT_PACKAGES="python3.11 python3.11-venv"
  JAX=${JAX:-jax[tpu]}
fi
[[ $APT_PACKAGES =~ ^[A-Za-z0-9.+:\ -]*$ ]] || die "--apt-packages '$APT_PACKAGES': give package names separated by spaces"
remote_path --python "$PYTHON"
require "$REF" --ref CAPPY_REF "a commit, branch or tag, e.g. --ref=HEAD"

# The steps on each worker, one shell line.
STEPS=()
if [[ -n $REPO ]]; then
  STEPS+=("{ [ -d $REMOTE_DIR/.git ] || git clone -q $(rquote "$REPO") $REMOTE_DIR; }"
    "git -C $REMOTE_DIR fetch -q origin $(rquote "$REF")"
    "git -C $REMOTE_DIR checkout -q --force FETCH_HEAD")
else
  git -C "$REPO_ROOT" rev-parse -q --verify "$REF^{commit}" >/dev/null ||
    die "--ref '$REF' is not a commit of $REPO_ROOT (commit first, or give --repo URL)"
  if [[ $REF == HEAD && -n $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no) ]]; then
    warn "uncommitted changes stay here: the workers get HEAD as committed"
  fi
  TARBALL=${TMPDIR:-/tmp}/cappy_jax-src.tar.gz
  STEPS+=("mkdir -p $REMOTE_DIR" "tar -xzf ~/cappy_jax-src.tar.gz -C $REMOTE_DIR")
fi
if [[ -n $APT_PACKAGES ]]; then
  STEPS+=("sudo apt-get -q -o DPkg::Lock::Timeout=600 update"
    "sudo DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 install $APT_PACKAGES")
fi
PIP=("$VENV/bin/pip" install -q -e "$(rquote ".${EXTRAS:+[$EXTRAS]}")" "$(rquote "$JAX")")
[[ -z $FIND_LINKS ]] || PIP+=(-f "$(rquote "$FIND_LINKS")")
STEPS+=("$PYTHON -m venv $VENV" "$VENV/bin/pip install -q -U pip" "cd $REMOTE_DIR" "${PIP[*]}")
REMOTE=$(printf ' && %s' "${STEPS[@]}")
REMOTE=${REMOTE# && }

if [[ -z $REPO ]]; then
  run_or_print git -C "$REPO_ROOT" archive --format=tar.gz "--output=$TARBALL" "$REF"
  if [[ -n $GPU_HOSTS ]]; then
    for host in "${HOSTS[@]}"; do run_or_print scp "$TARBALL" "$host:cappy_jax-src.tar.gz"; done
  else
    run_or_print "${TPU[@]}" scp "$TARBALL" "$NAME:cappy_jax-src.tar.gz" "${WHERE[@]}" --worker=all
  fi
fi
on_workers "$REMOTE"
