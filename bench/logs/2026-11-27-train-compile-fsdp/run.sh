# train_compile for TPU slices with fsdp, before (git 634c79f, /tmp/before) and after the embedding-table gather
run() { tree=$1; name=$2; shift 2; cd $tree && /usr/bin/time -f "%e s %M KB" env JAX_PLATFORMS=cpu /tmp/tpuenv/bin/python -m cappy_jax.train_compile --config configs/pretrain.py:large --output /tmp/tc2/$name.json "$@" > /tmp/tc2/$name.log 2>&1; echo "$name rc=$?" >> /tmp/tc2/done.log; }
run /tmp/before v5e-16-fsdp4-before --topology v5e-16 --config.mesh.data=4 --config.mesh.fsdp=4
run /work/main v5e-16-fsdp4-after --topology v5e-16 --config.mesh.data=4 --config.mesh.fsdp=4
run /tmp/before v4-32-fsdp16-before --topology v4-32 --config.mesh.data=1 --config.mesh.fsdp=16
run /work/main v4-32-fsdp16-after --topology v4-32 --config.mesh.data=1 --config.mesh.fsdp=16
# Host devices, roberta-base, 8 CPU devices all fsdp (reports cpu8-base-fsdp8-{before,after}.json):
#   cd TREE && python -m cappy_jax.train_compile --config configs/pretrain.py:base --topology cpu:8 \
#     --config.mesh.fsdp=8 --config.mesh.data=1 --config.global_rows=32 --config.data.eval_rows=32 \
#     --config.data.readers=1 --output REPORT
