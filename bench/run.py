"""The one benchmark entry point.

    python -m bench.run --suite encoder-cpu [--steps N] [--warmup N] [--cases a,b] [--baseline HF_BASELINE]
                        [--attention auto|xla|cudnn|cudnn-ragged] [--recipes R] [--output bench/results.jsonl]
                        [--markdown BENCHMARKS.md | --no-markdown]

Appends one JSON line per measurement to `--output` and a dated table, naming
the device, versions and this exact command, to `--markdown`. A suite is a
module with `run(steps=, warmup=, cases=)` returning or yielding dicts, `CASES`, `COLUMNS`
and `NOTE`; it is imported only when chosen. Each measurement is written as soon as it is
yielded; on SIGTERM or Ctrl-C the table of what was measured is still written, marked cut short. Suites must not import TensorFlow, except `input`
(the tf.data pipeline), which imports it inside its `run` and says so in its records.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import pathlib
import signal
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from bench import report
from cappy_jax.model import ATTENTION_IMPLS

REPO = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    module: str
    summary: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("encoder-cpu", "bench.encoder_cpu",
              "forward+backward of our encoder vs transformers' PyTorch model, same size, on CPU"),
        Suite("rouge", "bench.rouge_suite",
              "Rouge-L pairs/s of cappy_jax.data.rouge vs rouge-score on the same pairs, values checked equal"),
        Suite("train-shape", "bench.train_throughput",
              "training tokens/s and MFU of the real train step at a fixed shape (large: roberta-large, "
              "512 tokens, 32 rows per device, bf16)"),
        Suite("score", "bench.score_suite",
              "pairs/s of the scoring API on real BIG-bench pair lengths at two batch sizes, next to "
              "hf_baseline.py's scoring (--baseline) in the same command; SIZE-fp8 cases score with float8 "
              "matmuls"),
        Suite("train-real", "bench.train_real",
              "training pairs/s on real BIG-bench pair lengths: packed rows vs the reference's pad-to-512 vs "
              "dynamic padding, same pairs, same run; hf_baseline.py's train-real with --baseline"),
        Suite("profile", "bench.profile_suite",
              "where one train step's device time goes (jax.profiler trace: attention, matmuls, layer norms, "
              "dropout, optimizer, other; forward vs backward), host input, step time and MFU"),
        Suite("memory", "bench.memory_suite",
              "per-device memory of the train step at 8 and 32 rows (and the largest that fits on an "
              "accelerator), with and without remat"),
        Suite("input", "bench.input_suite",
              "tf.data pipeline from shards to packed batches on the host: pairs/s, packing efficiency, "
              "against the fastest accelerator train step in bench/results.jsonl (imports TensorFlow)"),
    )
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="suites:\n" + "\n".join(f"  {s.name}: {s.summary}"
                                                                    for s in SUITES.values()))
    parser.add_argument("--suite", required=True, choices=sorted(SUITES))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default: the suite's)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before timing (default: the suite's)")
    parser.add_argument("--cases", default=None, help="comma-separated subset of the suite's cases (default: all)")
    parser.add_argument("--baseline", default=None,
                        help="path to ../shared/bench/hf_baseline.py: suites that compare run it in the same command")
    parser.add_argument("--attention", default=None, choices=ATTENTION_IMPLS,
                        help="attention kernel of the model suites (default: the model config's, auto)")
    parser.add_argument("--recipes", default=None,
                        help="train-real: comma-separated subset of packed,pad512,dynamic, or packedN "
                             "(N pairs a row at most; default: packed,pad512,dynamic)")
    parser.add_argument("--output", type=pathlib.Path, default=REPO / "bench" / "results.jsonl",
                        help="JSON-lines file to append to")
    parser.add_argument("--markdown", type=pathlib.Path, default=REPO / "BENCHMARKS.md",
                        help="markdown file to append a dated table to")
    parser.add_argument("--no-markdown", action="store_true", help="write the JSON lines only")
    args = parser.parse_args(list(argv))
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs one suite and writes its results; returns the records written."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    suite = SUITES[args.suite]
    module = suite.load()
    cases = None if args.cases is None else [c for c in args.cases.split(",") if c]
    if cases is not None:
        unknown = sorted(set(cases) - set(module.CASES))
        if unknown:
            raise SystemExit(f"unknown cases {unknown} for suite {suite.name}; choose from {list(module.CASES)}")

    command = report.command_line(argv)
    env = report.environment(REPO)
    options = {  # suite-specific flags: (value for run(), why a suite without the parameter refuses it)
        "baseline": (args.baseline and str(pathlib.Path(args.baseline).resolve()), "has no baseline to compare with"),
        "recipes": (args.recipes and [r for r in args.recipes.split(",") if r], "has no recipes"),
        "attention": (args.attention, "runs no model"),
    }
    accepted = inspect.signature(module.run).parameters
    kwargs = {}
    for name, (value, refusal) in options.items():
        if value:
            if name not in accepted:
                raise SystemExit(f"suite {suite.name} {refusal}; drop --{name}")
            kwargs[name] = value
    records: list[dict[str, Any]] = []
    cut_short = None
    error: Exception | None = None
    previous = signal.signal(signal.SIGTERM, _stop)
    try:  # each measurement is written as it comes, so a run stopped at a time limit keeps what it measured
        for m in module.run(steps=args.steps, warmup=args.warmup, cases=cases, **kwargs):
            record = {"suite": suite.name, "command": command, "env": env, **m}
            report.append_jsonl(args.output, [record])
            records.append(record)
    except (Stopped, KeyboardInterrupt) as e:
        cut_short = f"{type(e).__name__} after {len(records)} measurement(s)"
    except Exception as e:  # e.g. hf_baseline failing after our rows: they are a lent GPU's minutes, keep them
        error = e
        first = (str(e).splitlines() or [""])[0][:200]
        cut_short = f"{type(e).__name__} after {len(records)} measurement(s): {first}"
    finally:
        signal.signal(signal.SIGTERM, previous)
    note = getattr(module, "NOTE", "")
    if cut_short:
        note = f"**cut short ({cut_short}): the rows below are what was measured before the stop.** {note}"
    section = report.markdown_section(suite.name, env, command, report.markdown_table(module.COLUMNS, records),
                                      note)
    if not args.no_markdown:
        report.append_markdown(args.markdown, section)
    print(section)
    busy = [r["case"] for r in records if (r.get("other_load") or 0) > 0.1]
    if busy:
        print(f"warning: other processes used over 10% of the cores while timing {busy}; "
              "those figures are disturbed (see the `other load` column)", file=sys.stderr)
    if error is not None:
        raise error
    if cut_short:
        raise SystemExit(f"suite {suite.name} was cut short ({cut_short}); what it measured is written")
    return records


class Stopped(Exception):
    """SIGTERM (e.g. from `timeout`) during a suite: stop measuring, write what was measured."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped(f"signal {signum}")


if __name__ == "__main__":
    main()
