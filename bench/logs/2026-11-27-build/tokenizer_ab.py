"""PairTokenizer before and after 9930a61 on real BIG-bench pairs, in one process (by hand, 2026-11-27).

    git worktree add /tmp/base_tree 6b018b0
    python bench/logs/2026-11-27-build/tokenizer_ab.py /tmp/base_tree /tmp/bb_all /tmp/demo2/init_scorer/tokenizer

/tmp/bb_all: `python -m cappy_jax.data.fetch bigbench --dest /tmp/bb_all` (every JSON task); the tokenizer is
the demo's (all-MiniLM-L6-v2's WordPiece). Pairs: each example's input (with the task prefix) against each of
its choices, or its target. Best of three passes each, the two versions taking turns; the ids, type ids and
truncation flags of both are compared.
"""

import importlib.util
import json
import sys
import time


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pairs_of(path: str, n: int) -> tuple[list[str], list[str]]:
    task = json.load(open(path))
    instructions, responses = [], []
    for ex in task["examples"][:n]:
        for choice in ex.get("target_scores", {}) or [ex.get("target")]:
            instructions.append(task.get("task_prefix", "") + ex["input"])
            responses.append(choice[0] if isinstance(choice, list) else str(choice))
    return instructions, responses


def main(old_tree: str, tasks_dir: str, tokenizer_dir: str) -> None:
    sys.path.insert(0, ".")
    old = load(f"{old_tree}/cappy_jax/tokenization.py", "tokenization_old").PairTokenizer.from_dir(tokenizer_dir)
    new = load("cappy_jax/tokenization.py", "tokenization_new").PairTokenizer.from_dir(tokenizer_dir)
    for task, n in [("cifar10_classification/hex", 300), ("intersect_geometry/shapes_6", 100),
                    ("real_or_fake_text/gpt2_xl", 300), ("paragraph_segmentation", 300), ("mnist_ascii", 500)]:
        instructions, responses = pairs_of(f"{tasks_dir}/{task}/task.json", n)
        best, out = {}, {}
        for _ in range(3):
            for name, tok in (("old", old), ("new", new)):
                t = time.perf_counter()
                out[name] = tok.encode_pairs(instructions, responses, 512, warn=False)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
        a, b = out["old"], out["new"]
        same = (all((x == y).all() for x, y in zip(a.input_ids, b.input_ids))
                and all((x == y).all() for x, y in zip(a.token_type_ids, b.token_type_ids))
                and (a.truncated == b.truncated).all())
        k = len(instructions)
        print(f"{task:30s} {k:5d} pairs, truncated {b.truncated.mean():.2f}: old {k / best['old']:7.0f} "
              f"new {k / best['new']:7.0f} pairs/s x{best['old'] / best['new']:.2f} identical={same}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
