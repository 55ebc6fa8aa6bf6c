"""How the `profile` suite would attribute the H100 train step's kernels, from its optimized HLO alone (no trace:
no GPU). Every kernel of the entry computation and of the loops it runs (fusions, custom calls: cuDNN, cuBLAS)
goes through `profile_suite.hlo_instructions` and `classify`, as a trace event naming it would; prints the
count per part, forward and backward, and the largest `other` kernels by their name stacks, to see that the
GPU compiler's fusions still carry the names the suite reads. From the repo root, after dump_train_hlo.py:

    python bench/logs/2026-11-28-jax011-h100/classify_hlo.py /tmp/train_h100.hlo
"""
import collections
import re
import sys

sys.path.insert(0, ".")
from bench import profile_suite as ps  # noqa: E402

text = open(sys.argv[1]).read()
instructions = ps.hlo_instructions(text)
KERNELS = ("fusion", "custom-call", "dot", "convolution")
counts: collections.Counter = collections.Counter()
unnamed = 0
other: collections.Counter = collections.Counter()
for name, ins in instructions.items():
    if ins["opcode"] not in KERNELS:
        continue
    part = ps.classify(ins["op_names"], ins["opcode"], name)
    counts[part, "bwd" if ps.backward(ins["op_names"]) else "fwd"] += 1
    if not ins["op_names"]:
        unnamed += 1
    if part == "other":
        stacks = {re.sub(r"layer_\d+", "layer_N", n.split("jvp(Scorer)/")[-1]) for n in ins["op_names"]}
        other[" | ".join(sorted(stacks))[:160] or "(no name)"] += 1
print("jax kernels by part (fwd, bwd):")
for part in ps.PARTS:
    print(f"  {part:12s} {counts[part, 'fwd']:5d} {counts[part, 'bwd']:5d}")
print(f"kernels with no name stack at all: {unnamed} of {sum(counts.values())}")
print("most frequent `other` kernels by name stack:")
for stacks, n in other.most_common(15):
    print(f"  {n:4d}  {stacks}")
