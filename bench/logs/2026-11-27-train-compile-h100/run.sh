# The `memory` suite's table for one H100 (8 rows, 32 rows and the largest that fits, remat off and on), and the
# attention kernels side by side: roberta-large (configs/pretrain.py:large, bf16), compiled (not run) by XLA's GPU
# compiler on this 2-core CPU, no GPU: a venv with JAX's CUDA plugin of jax's version, as
# tests/test_train_compile.py builds (python -m venv --system-site-packages $VENV;
# $VENV/bin/pip install --no-deps jax-cuda12-plugin==0.10.2 jax-cuda12-pjrt==0.10.2). From the repo root.
PY=${PY:-/tmp/cudaenv/bin/python}
out=bench/logs/2026-11-27-train-compile-h100
run() { name=$1; shift; /usr/bin/time -f "%e s %M KB" $PY -m cappy_jax.train_compile --config configs/pretrain.py:large \
  --topology h100 --config.data.readers=8 --config.data.eval_rows=8 "$@" --output $out/$name.json > $out/$name.log 2>&1
  echo "$name rc=$?" >> $out/done.log; }
run rows8 --config.global_rows=8
run rows8-remat --config.global_rows=8 --config.model.remat=True
run rows32 --config.global_rows=32
run rows32-remat --config.global_rows=32 --config.model.remat=True
run rows32-ragged --config.global_rows=32 --config.model.attention=cudnn-ragged
run rows32-ragged-8slots --config.global_rows=32 --config.model.attention=cudnn-ragged --config.data.max_segments=8
run rows32-xla --config.global_rows=32 --config.model.attention=xla
run largest --config.global_rows=64 --largest=8
run largest-remat --config.global_rows=256 --config.model.remat=True --largest=32
