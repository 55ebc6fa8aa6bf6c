"""Brings a lent GPU's results home: what `bench/accelerator.sh` left in OUTDIR, added to this checkout.

    python -m bench.merge OUTDIR --log NAME

The GPU machine ran on a copy of this tree, so the `BENCHMARKS.md` and `results.jsonl` it returns are
ours plus what its suites appended. This appends that tail here, and copies `OUTDIR/accelerator.log`
to `bench/logs/NAME.log`. It refuses when a returned file does not start with ours (this checkout
changed it since the copy was made): then merge by hand, or, when the change since was an earlier
merge of the same session's other GPU command, name the commit the GPU run copied with
`--base COMMIT`: the tail is taken after that commit's file, and ours must still start with it.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Sequence

REPO = pathlib.Path(__file__).resolve().parent.parent
# (file in OUTDIR, the same file in this checkout)
FILES = (("BENCHMARKS.md", "BENCHMARKS.md"), ("results.jsonl", "bench/results.jsonl"))


def appended(ours: str, theirs: str, name: str) -> str:
    """What `theirs` adds after `ours`. Pure."""
    if not theirs.startswith(ours):
        raise ValueError(f"the returned {name} does not start with this checkout's: it changed since the "
                         f"GPU run's copy was made; merge by hand")
    return theirs[len(ours):]


def at_commit(repo: pathlib.Path, commit: str, local: str) -> str:
    """`local` as `commit` holds it."""
    return subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{local}"], check=True, capture_output=True,
                          text=True, encoding="utf-8").stdout


def merge(outdir: pathlib.Path, log_name: str, repo: pathlib.Path = REPO, base: str | None = None) -> dict[str, int]:
    """Appends every returned file's tail (all checked before anything is written); characters added.
    `base`: the commit the GPU run copied, when this checkout has appended to the files since."""
    tails = {}
    for returned, local in FILES:
        src, dst = outdir / returned, repo / local
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing: is {outdir} the OUTDIR of bench/accelerator.sh?")
        ours = dst.read_text(encoding="utf-8")
        start = at_commit(repo, base, local) if base else ours
        if not ours.startswith(start):
            raise ValueError(f"this checkout's {local} no longer starts with {base}'s: merge by hand")
        tails[dst] = appended(start, src.read_text(encoding="utf-8"), returned)
    for dst, tail in tails.items():
        with dst.open("a", encoding="utf-8") as f:
            f.write(tail)
    log = outdir / "accelerator.log"
    if log.is_file():
        (repo / "bench" / "logs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, repo / "bench" / "logs" / f"{log_name}.log")
    return {str(dst.relative_to(repo)): len(tail) for dst, tail in tails.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=pathlib.Path, help="the OUTDIR bench/accelerator.sh wrote")
    parser.add_argument("--log", required=True, help="name of the log under bench/logs/, e.g. 2026-11-27-h100")
    parser.add_argument("--base", default=None,
                        help="the commit the GPU run copied, when this checkout has appended to the files since")
    args = parser.parse_args(argv)
    for path, chars in merge(args.outdir, args.log, base=args.base).items():
        print(f"{path}: {chars} characters appended", file=sys.stderr)


if __name__ == "__main__":
    main()
