"""The optimized HLO of roberta-large's train step (32 rows of 512 tokens, bf16, cuDNN attention) compiled for an
H100 without one, into /tmp/train_h100.hlo (15 MB, not kept). From the repo root:

    JAX_PLATFORMS=cpu XLA_FLAGS=--xla_gpu_autotune_level=0 $VENV/bin/python bench/logs/2026-11-27-train-compile-h100/dump_train_hlo.py
    python bench/logs/2026-11-27-train-compile-h100/hlo_traffic.py /tmp/train_h100.hlo [PART] > .../hlo_traffic.txt
"""
import sys, jax
from jax.experimental import topologies
from cappy_jax import train_compile as tc, train, sharding as sl
from configs import pretrain
config = pretrain.get_config("large"); config.unlock()
config.global_rows = 32; config.data.readers = 8; config.data.eval_rows = 8; config.lock()
where = tc.target("h100")
mesh = sl.make_mesh(dict(config.mesh), devices=where.devices)
mcfg = train.model_config(config).for_platform("gpu")
tb, _ = tc.abstract_batches(config, mesh)
key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sl.replicated(mesh))
with tc._cudnn_described_by(where):
    setup = train.build(config, mesh, mcfg)
    step = setup.step_fn.lower(setup.abstract_state, tb, key).compile()
open("/tmp/train_h100.hlo", "w").write(step.as_text())
