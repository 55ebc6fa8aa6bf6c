# How far `quantize='fp8'` moves a trained scorer's scores and picks, against float32 and bfloat16, on this
# 2-core CPU (float8 matmuls computed exactly from the rounded operands: the numbers a GPU's fp8 tensor cores
# give, up to summation order). The scorer: the README's demo (MiniLM fine-tuned 500 steps, held-out choice
# tasks). From the repo root, after `python -m cappy_jax.demo --workdir $WORKDIR`.
WORKDIR=${WORKDIR:-runs/demo}
out=bench/logs/2026-11-27-fp8-agreement
for knob in quantize=none dtype=bfloat16 quantize=fp8; do
  python -m cappy_jax.evaluate --config configs/evaluate.py:demo --checkpoint "$WORKDIR/train" \
    --data cappy_jax/demo_data/bigbench --output "$WORKDIR/eval-${knob#*=}" --config.scoring.$knob \
    > "$out/evaluate-${knob#*=}.log" 2>&1
done
for pair in "none bfloat16" "none fp8" "bfloat16 fp8"; do
  set -- $pair
  echo "$1 vs $2: $(python -m bench.compare_reports "$WORKDIR/eval-$1" "$WORKDIR/eval-$2")"
done | tee "$out/compare.txt"
