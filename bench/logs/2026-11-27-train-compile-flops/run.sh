# XLA's FLOP count against the model's (train_compile's "the model" figure), data parallel vs fsdp=16 on a
# v4-32, compiled (not run) on the 2-core CPU through libtpu 0.0.42.1 (a venv as tests/test_train_compile.py builds).
# Run from the repository root; reports and printed summaries land beside this script.
out=bench/logs/2026-11-27-train-compile-flops
run() { name=$1; shift; env JAX_PLATFORMS=cpu /tmp/tpuenv/bin/python -m cappy_jax.train_compile --topology v4-32 "$@" --output $out/$name.json > $out/$name.log 2>&1; echo "$name rc=$?" >> $out/done.log; }
base="--config configs/pretrain.py:base --config.global_rows=256 --config.data.eval_rows=256 --config.data.readers=16"
run base-dp $base --config.mesh.data=16 --config.mesh.fsdp=1
run base-fsdp16 $base --config.mesh.data=1 --config.mesh.fsdp=16
run large-fsdp16 --config configs/pretrain.py:large --config.mesh.data=1 --config.mesh.fsdp=16
# The loops themselves: the optimized HLO of the base fsdp=16 step (written by a throwaway script calling
# step.as_text()) holds 68 while loops named wide.windowed_dot_general_*_rs, one per weight gradient, each
# running 4 trips over 4 of the 16 shards (2 bidirectional collective-permutes per half-body); data parallel has none.
# Before the change that added the model's count (so their summaries lack it), roberta-base on a v4-8 at
# 16 rows a chip, data=4 against fsdp=4 (v4-8-base-{dp,fsdp4}.{json,log}):
#   --config configs/pretrain.py:base --topology v4-8 --config.global_rows=64 --config.data.eval_rows=64 \
#     --config.data.readers=4 --config.mesh.data=4 --config.mesh.fsdp=1   (or --config.mesh.data=1 --config.mesh.fsdp=4)
