# The memory suite's table (8 rows, 32 rows and the largest that fits, remat off and on) for one v4 chip:
# roberta-large (configs/pretrain.py:large, bf16, XLA's attention) data parallel on a v4-8, compiled (not run)
# on the 2-core CPU through libtpu 0.0.42.1 (a venv as tests/test_train_compile.py builds). From the repo root.
out=bench/logs/2026-11-27-train-compile-memory
run() { name=$1; shift; /usr/bin/time -f "%e s %M KB" env JAX_PLATFORMS=cpu /tmp/tpuenv/bin/python -m cappy_jax.train_compile --config configs/pretrain.py:large --topology v4-8 "$@" --output $out/$name.json > $out/$name.log 2>&1; echo "$name rc=$?" >> $out/done.log; }
run rows8 --config.global_rows=32
run rows8-remat --config.global_rows=32 --config.model.remat=True
run rows32-remat --config.global_rows=128 --config.model.remat=True
run largest-remat --config.global_rows=256 --config.model.remat=True --largest=16
# Reused from earlier folders: 16 rows without remat, 2026-11-27-train-compile-largest/v4-8-xla-16rows.json;
# 32 rows, the largest without remat: 2026-11-27-train-compile-largest/v4-8-xla-largest.json; 64 rows with remat: 2026-11-27-train-compile/v4-8-remat.json.
