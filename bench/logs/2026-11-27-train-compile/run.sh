cd /work/main
run() { name=$1; shift; /usr/bin/time -f "%e s %M KB" env JAX_PLATFORMS=cpu /tmp/tpuenv/bin/python -m cappy_jax.train_compile --config configs/pretrain.py:large --output /tmp/tc/$name.json "$@" > /tmp/tc/$name.log 2>&1; echo "$name rc=$?" >> /tmp/tc/done.log; }
run v4-8 --topology v4-8
run v4-8-remat --topology v4-8 --config.model.remat=True
run v4-32 --topology v4-32
run v5e-16 --topology v5e-16
run v4-8-accum2 --topology v4-8 --config.grad_accum=2
