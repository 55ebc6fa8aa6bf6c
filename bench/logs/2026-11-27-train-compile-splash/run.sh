# roberta-large compiled for TPU slices with attention=splash (git b97d742), one process each
run() { name=$1; shift; cd /work/main && /usr/bin/time -f "%e s %M KB" env JAX_PLATFORMS=cpu /tmp/tpuenv/bin/python -m cappy_jax.train_compile --config configs/pretrain.py:large --output /tmp/tc3/$name.json "$@" > /tmp/tc3/$name.log 2>&1; echo "$name rc=$?" >> /tmp/tc3/done.log; }
run v4-32-splash --topology v4-32 --config.model.attention=splash
run v4-8-splash --topology v4-8 --config.model.attention=splash
run v5e-16-splash --topology v5e-16 --config.model.attention=splash
