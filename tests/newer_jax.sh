#!/usr/bin/env bash
# The test suite under the lent GPUs' jax, on this CPU, before a GPU's minutes are spent on it.
#
#   bash tests/newer_jax.sh [PYTEST_ARGS...]        (as root; default: the whole suite)
#
# The GPU machine runs jax 0.11 on Python 3.12 (the device tool's KINDS.md); jax 0.11 needs Python 3.12
# or newer, and this machine's Debian 12 has 3.11. So this builds a Debian 13 (trixie, Python 3.13)
# root with debootstrap once, under ROOT (default /tmp/cappy_jax_trixie), with a venv holding
# JAX_VERSION (default 0.11.2, the GPU's) and setup.py's requirements with its test extra, torch
# unpinned (the 2.13.0 CPU wheel on disk is for Python 3.11 only, so pip takes PyPI's, several GB;
# its Triton is removed). Later runs reuse that root. This checkout is mounted at /repo inside it,
# and so is this machine's CUDA (/usr/local/cuda-*: ptxas and libdevice, which XLA's GPU compiler
# needs even with no GPU). The tests that compile for TPU or GPU targets install jax's plugins of
# JAX_VERSION themselves.
set -euo pipefail
root=${ROOT:-/tmp/cappy_jax_trixie}
version=${JAX_VERSION:-0.11.2}
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "newer_jax.sh: run as root (debootstrap, mount, chroot)" >&2; exit 2; }

if [[ ! -x $root/opt/venv/bin/python ]]; then
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  echo "== debootstrap trixie into $root (a few minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-dev,ca-certificates,git,procps \
    trixie "$root" http://deb.debian.org/debian
fi
# What reaches the network and names this host, as on the machine outside.
cp /etc/resolv.conf /etc/hosts "$root/etc/"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"

mounted=()
bind() {  # bind SOURCE TARGET-inside-root, undone on exit
  mkdir -p "$root$2"
  mountpoint -q "$root$2" || { mount --bind "$1" "$root$2" && mounted=("$root$2" "${mounted[@]}"); }
}
cleanup() { for m in "${mounted[@]}"; do umount "$m" || true; done; mounted=(); }
# This checkout is bound into ROOT while this runs: a killed run can leave it there, so check `mount |
# grep ROOT` (and umount) before removing ROOT, or `rm -r` would reach the checkout.
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
bind /proc /proc
bind /sys /sys   # libtpu counts CPUs there
bind /dev /dev
bind "$repo" /repo
cuda=$(find /usr/local -maxdepth 1 -name "cuda-*" -type d 2>/dev/null | sort -V | tail -1)
if [[ -n $cuda ]]; then  # XLA's GPU compiler calls ptxas even with no GPU
  bind "$cuda" "$cuda"
  mkdir -p "$root/usr/local/bin"
  ln -sfn "$cuda" "$root/usr/local/cuda"  # where XLA looks for libdevice
  for tool in ptxas nvlink; do
    [[ -x $cuda/bin/$tool ]] && ln -sf "$cuda/bin/$tool" "$root/usr/local/bin/$tool"
  done
fi

inside() { chroot "$root" env -u PIP_FIND_LINKS PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin HOME=/root bash -c "$1"; }
if [[ ! -x $root/opt/venv/bin/python ]] || ! inside "python -c 'import jax; assert jax.__version__ == \"$version\"'" 2>/dev/null; then
  echo "== a venv with jax $version and cappy_jax's requirements (pip; the first time several minutes)"
  inside "python3 -m venv /opt/venv && pip install -q setuptools wheel"
  # setup.py's own requirements: install_requires, the test extra, torch without its 3.11-only pin.
  inside "cd /tmp && rm -rf egg && mkdir egg && cp /repo/setup.py egg/ && cd egg && python setup.py -q egg_info >/dev/null \
    && awk '/^\[/ {section=\$0; next} NF && (section == \"\" || section == \"[test]\")' *.egg-info/requires.txt \
    | sed 's/^torch==.*/torch/' > /tmp/requirements.txt && cat /tmp/requirements.txt \
    && pip install -q -r /tmp/requirements.txt jax==$version jaxlib==$version"
  # PyPI's torch brings Triton, whose LLVM aborts the process beside TensorFlow's ('Option registered
  # more than once') once transformers imports torch._dynamo; torch on a CPU does not need it.
  inside "pip uninstall -y -q triton"
fi
inside "git config --global --add safe.directory /repo"
inside "python -c 'import sys, jax, jaxlib, flax, optax, numpy; print(\"python\", sys.version.split()[0], \"jax\", jax.__version__, \"jaxlib\", jaxlib.__version__, \"flax\", flax.__version__, \"optax\", optax.__version__, \"numpy\", numpy.__version__)'"
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(tests)
quoted=$(printf ' %q' "${args[@]}")
# The venv's packages on PYTHONPATH too: the compile tests' throwaway venvs see only the system's.
inside "cd /repo && PYTHONPATH=/repo:\$(python -c 'import site; print(site.getsitepackages()[0])') python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning$quoted"
