"""What XLA's GPU compiler makes of the scorer's fp8 matmuls for an H100, without one (from the repo root):

    JAX_PLATFORMS=cpu XLA_FLAGS=--xla_gpu_autotune_level=0 $VENV/bin/python \
        bench/logs/2026-11-27-train-compile-h100/score_fp8.py

roberta-large, one batch of the score suite's throughput shape (79 rows of 512 tokens, 16 slots), cuDNN's
ragged attention, `quantize` none and fp8; prints how many matmuls of each operand type the optimized HLO
holds and what runs them. Without a GPU XLA cannot autotune, so the kernel is its default choice.
"""
import collections
import functools
import re
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

sys.path.insert(0, ".")
from cappy_jax import model as model_lib, packing, train_compile  # noqa: E402
from configs import model as model_configs  # noqa: E402

h100 = train_compile.target("h100")
devices = h100.devices
replicated = NamedSharding(jax.sharding.Mesh(np.array(devices), ("data",)), PartitionSpec())
base = model_lib.ModelConfig.from_dict(dict(model_configs.VARIANTS["large"], dtype="bfloat16",
                                            attention="cudnn-ragged", dropout_rate=0.0))
template = packing.make_batch([], [], [], max_len=512, max_segments=16, pad_id=1, num_rows=79)
batch = {k: jax.ShapeDtypeStruct(template[k].shape, template[k].dtype, sharding=replicated)
         for k in packing.MODEL_INPUTS}
with train_compile._cudnn_described_by(h100):
    for quantize in ("none", "fp8"):
        config = base.replace(quantize=quantize)
        params = jax.eval_shape(lambda: model_lib.inference_params(config, model_lib.init_params(config, jax.random.key(0))))
        params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), params)
        compiled = jax.jit(functools.partial(model_lib.score, config)).lower(params, batch).compile()
        text = compiled.as_text()
        gemms = re.findall(r"%gemm_fusion[\w.]*_computation \((parameter_0[\w.]*): (\w+)\[", text)
        operand = collections.Counter(t for _, t in gemms)
        cublas = len(re.findall(r'custom_call_target="__cublas', text))
        print(f"quantize={quantize}: {len(gemms)} Triton GEMM fusions by first operand type {dict(operand)}, "
              f"{cublas} cuBLAS calls; {train_compile.memory(compiled)['total'] / 2**30:.2f} GiB")
