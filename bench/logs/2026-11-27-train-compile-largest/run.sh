# the largest rows per chip of roberta-large (pretrain.py:large, 512 tokens a row, bf16) on a v4-8, to 16 rows
# git c7379ff
run() { name=$1; shift; cd /work/main && /usr/bin/time -f "%e s %M KB" env JAX_PLATFORMS=cpu /tmp/tpuenv/bin/python -m cappy_jax.train_compile --config configs/pretrain.py:large --largest=16 --output /tmp/tc4/$name.json "$@" > /tmp/tc4/$name.log 2>&1; echo "$name rc=$?" >> /tmp/tc4/done.log; }
run v4-8-xla-largest --topology v4-8
run v4-8-splash-largest --topology v4-8 --config.model.attention=splash --config.global_rows=512
