# Usage: run.sh TREE OUTDIR (TREE: a checkout whose cappy_jax runs; /tmp/demo2: python -m cappy_jax.demo --workdir /tmp/demo2)
#!/bin/bash
# $1 = tree, $2 = out
cd $1 && /usr/bin/time -f "%e s wall" python -m cappy_jax.evaluate --checkpoint /tmp/demo2/train --config configs/evaluate.py:bigbench_choice --data /tmp/bb_all --config.units=all --config.max_examples_per_task=2 --config.data.tasks="()" --config.data.heldout_tasks="()" --output $2
