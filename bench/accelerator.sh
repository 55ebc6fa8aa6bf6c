#!/usr/bin/env bash
# Every accelerator suite in one command, the issue's ratios first, within one time budget.
#
#   bash bench/accelerator.sh HF_BASELINE [OUTDIR] [SECONDS] [CASE] [SUITES]
#
# HF_BASELINE: a copy of ../shared/bench/hf_baseline.py (each comparing suite runs it in the same
# command). Order: attention kernel checks (cudnn-ragged, else cudnn, else xla: the first that runs
# and agrees with XLA's attention is used by every suite; ATTENTION=NAME skips the checks, for a
# second command on a machine where the first already chose), then the three suites with ratios
# (train-real, train-shape, score: the case and then the case with the layers' matmuls in float8,
# `quantize='fp8'`, at each batch size, so the unquantized ratio lands first), then profile, memory, and
# when cudnn-ragged was chosen
# train-real-cudnn (train-real's packed recipe again with the dense-mask cudnn kernel: what the ragged
# layout gains) and train-real-slots (packed rows of at most 16 against at most 8 pairs: cuDNN's ragged
# layout runs every slot of every row as a sequence, used or not, and rows hold 3.3 pairs on average).
# Each suite gets what is left of SECONDS (default 540), and one that would start with under a
# minute left is skipped and said so. CASE (default large; tiny checks the script in minutes on a CPU)
# picks the suites' case; SUITES (comma-separated, default all) picks suites, kept in the order above.
# train-real runs packed and pad512 only: each shape of the train step compiles for about a minute
# on an H100 (BENCHMARKS.md), and our dynamic-padding recipe would add three; hf_baseline's dynamic
# row stays. train-shape times `large` (TRAIN_SHAPE_CASES=large,large-scan adds the scanned layers).
# A suite stopped by its time share or an error (hf_baseline failing, say) still writes what it measured
# (bench/run.py).
# After each suite BENCHMARKS.md, bench/results.jsonl and the log are copied to OUTDIR, so a run cut
# short still returns what it measured. Compilations are cached on disk (JAX_COMPILATION_CACHE_DIR),
# so the same step compiles once (train-real's pad512 and train-shape; memory's estimate and its
# measured run). memory compiles without autotuning (--xla_gpu_autotune_level=0): it times nothing,
# and autotuning is much of each compilation.
# Back home, `python -m bench.merge OUTDIR --log NAME` appends the returned tables and JSON lines.
set -u
baseline=${1:?usage: bash bench/accelerator.sh HF_BASELINE [OUTDIR] [SECONDS] [CASE] [SUITES]}
out=${2:-bench/accelerator-out}
budget=${3:-540}
case=${4:-large}
suites=",${5:-train-real,train-shape,score,profile,memory,train-real-cudnn,train-real-slots},"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/cappy_jax_xla_cache}
# JAX takes 75% of GPU memory at start unless told not to; the PyTorch baseline runs beside it.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
# Without preallocation JAX's allocator still grows to 75% of the GPU and keeps what it took, which
# left hf_baseline out of memory on an H100 (XLA's attention kept [rows, heads, 512, 512] scores).
# The suites that run it beside ours cap ours at half; memory measures against the whole limit.
beside=${BESIDE_FRACTION:-0.5}
start=$SECONDS
log="$out/accelerator.log"

left() { echo $((budget - (SECONDS - start))); }

# BENCH_MARKDOWN / BENCH_RESULTS send the tables and JSON lines elsewhere (the tests' dry run does).
markdown=${BENCH_MARKDOWN:-BENCHMARKS.md}
results=${BENCH_RESULTS:-bench/results.jsonl}
io=()
[[ -n ${BENCH_MARKDOWN:-} ]] && io+=(--markdown "$markdown")
[[ -n ${BENCH_RESULTS:-} ]] && io+=(--output "$results")

save() { cp "$markdown" "$out/BENCHMARKS.md" 2>/dev/null; cp "$results" "$out/results.jsonl" 2>/dev/null; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv 2>&1 | tee -a "$log"
python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$log"
# cudnn-ragged needs cuDNN 9.6 or newer on Hopper: say which one is here.
python -c "from jax._src.lib import cuda_versions as v; print('cuDNN', v.cudnn_get_version() if v else None)" 2>&1 | tee -a "$log"

# The attention kernel every suite uses: cuDNN's ragged layout (each pair its own sequence, no bias),
# else cuDNN with the dense segment mask, else XLA; each must first agree with XLA's attention.
kernel=${ATTENTION:-}
if [[ -z $kernel ]]; then
  kernel=xla
  for k in cudnn-ragged cudnn; do
    if timeout -k 5 150 python -m bench.attention_check --attention "$k" --model "$( [[ $case == tiny ]] && echo tiny || echo base )" \
        2>&1 | tee "$out/attention_check_$k.txt" | tee -a "$log" | tail -1 | grep -q '"ok": true'; then
      kernel=$k; break
    fi
    echo "attention $k failed or disagreed with XLA's" | tee -a "$log"
  done
fi
echo "== attention kernel for every suite: $kernel" | tee -a "$log"

run_suite() {  # run_suite LABEL CAP [ARGS...]: LABEL names it in SUITES; SUITE (default LABEL) is bench.run's
  local label=$1 cap=$2; shift 2
  local name=${SUITE:-$label}
  [[ $suites == *",$label,"* ]] || return 0
  local t; t=$(left)
  if (( t < 60 )); then echo "== $label skipped: $t s left of $budget" | tee -a "$log"; return; fi
  (( cap > t )) && cap=$t
  echo "== $label (up to $cap s, $(left) s left)" | tee -a "$log"
  local s0=$SECONDS
  timeout -k 10 "$cap" python -m bench.run --suite "$name" --attention "$kernel" "${io[@]}" "$@" 2>&1 | tee -a "$log"
  echo "== $label done in $((SECONDS - s0)) s (exit ${PIPESTATUS[0]})" | tee -a "$log"
  save
}

XLA_PYTHON_CLIENT_MEM_FRACTION=$beside run_suite train-real 270 --cases "$case" --recipes packed,pad512 --baseline "$baseline"
XLA_PYTHON_CLIENT_MEM_FRACTION=$beside run_suite train-shape 200 --cases "$( [[ $case == tiny ]] && echo tiny || echo "${TRAIN_SHAPE_CASES:-large}" )" \
  --baseline "$baseline"
XLA_PYTHON_CLIENT_MEM_FRACTION=$beside run_suite score 260 --cases "$case,$case-fp8" --baseline "$baseline"
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=" run_suite profile 150 --cases "$case"
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" run_suite memory 300 --cases "$case"
if [[ $kernel == cudnn-ragged ]]; then
  # What the ragged layout gains over the dense-mask kernel on packed rows, then what fewer slots a row gain
  # (packed's compilation comes from the disk cache: train-real compiled it).
  kernel=cudnn SUITE=train-real run_suite train-real-cudnn 150 --cases "$case" --recipes packed
  SUITE=train-real run_suite train-real-slots 150 --cases "$case" --recipes packed,packed8
fi
echo "== all done in $((SECONDS - start)) s" | tee -a "$log"
save
