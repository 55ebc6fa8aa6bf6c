# baseline with room to spare on the same slice: 16 rows per chip, splash and XLA attention
while [ "$(wc -l < /tmp/tc4/done.log 2>/dev/null || echo 0)" -lt 2 ]; do sleep 10; done
run() { name=$1; shift; cd /work/main && /usr/bin/time -f "%e s %M KB" env JAX_PLATFORMS=cpu /tmp/tpuenv/bin/python -m cappy_jax.train_compile --config configs/pretrain.py:large --output /tmp/tc4/$name.json "$@" > /tmp/tc4/$name.log 2>&1; echo "$name rc=$?" >> /tmp/tc4/done.log; }
run v4-8-splash-16rows --topology v4-8 --config.model.attention=splash --config.global_rows=64
run v4-8-xla-16rows --topology v4-8 --config.global_rows=64
