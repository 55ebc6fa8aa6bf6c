"""Where a benchmark ran and how its results are written down.

Kept apart from the suites so every suite reports the same environment facts
(device, CPU, versions, exact command) in the same JSON-lines and markdown form:
a figure without the machine and the command that produced it cannot be checked.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import shlex
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Versions every table names. Read from package metadata: nothing gets imported.
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "torch", "transformers")

HEADER = """# Benchmarks

Every table below is appended by `bench/run.py` (`python -m bench.run --suite NAME`), headed by the
date, the device, the package versions and the exact command that produced it; rerun that command
to check a figure. Each measurement is also appended, as one JSON line, to `bench/results.jsonl`.
Paragraphs marked *Commentary*, and sections marked "by hand", are written by people reading the
figures, not by the script.
"""


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a suite's markdown table: a header, a record key and a format spec."""

    header: str
    key: str
    fmt: str = ""


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces this run, whichever way `main` was called."""
    return shlex.join(["python", "-m", "bench.run", *argv])


def cpu_model(cpuinfo: str | None = None) -> str:
    """The `model name` of /proc/cpuinfo (or the platform's processor string where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), not the host's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def package_versions(names: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(repo: pathlib.Path) -> str | None:
    """Short commit, with `+dirty` when the tree has changes; None outside a git checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def environment(repo: pathlib.Path) -> dict[str, Any]:
    """The facts a reader needs to judge a figure: when, on what, with which code."""
    import jax

    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device_kind": device.device_kind,
        "jax_backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        # Other work on the machine slows every figure: record how busy it was.
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "versions": package_versions(),
        "git": git_revision(repo),
    }


def machine_busy_s(stat: str | None = None) -> float | None:
    """CPU seconds every process on the machine has used (from /proc/stat); None where unreadable."""
    try:
        stat = pathlib.Path("/proc/stat").read_text() if stat is None else stat
        fields = [int(x) for x in stat.splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    if len(fields) < 8:
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait is busy.
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Share of this process's cores that *other* processes (and the hypervisor) used meanwhile.

    A 2-core machine shared with other work gives slow, noisy steps; this number
    says how much a figure was disturbed, so a reader can discount it.
    """

    def __enter__(self) -> OtherLoad:
        self.share: float | None = None
        self._start = (time.perf_counter(), time.process_time(), machine_busy_s())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, own0, busy0 = self._start
        busy1 = machine_busy_s()
        if busy0 is None or busy1 is None:
            return
        wall = time.perf_counter() - wall0
        other = (busy1 - busy0) - (time.process_time() - own0)
        self.share = round(max(0.0, other / (wall * usable_cores())), 3) if wall > 0 else None


def is_finite_positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def append_jsonl(path: pathlib.Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Appends one JSON line per measurement; NaN or infinity is refused, not written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(dict(r), sort_keys=True, allow_nan=False) for r in records]
    with path.open("a") as f:
        f.writelines(line + "\n" for line in lines)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def markdown_table(columns: Sequence[Column], records: Sequence[Mapping[str, Any]]) -> str:
    head = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    rows = ["| " + " | ".join(_cell(r.get(c.key), c.fmt) for c in columns) + " |" for r in records]
    return "\n".join([head, rule, *rows])


def markdown_section(suite: str, env: Mapping[str, Any], command: str, table: str, note: str = "") -> str:
    """A dated block: what ran, where, with what, then the table."""
    v = env["versions"]
    versions = ", ".join(f"{k} {v[k]}" for k in v if v[k] is not None)
    lines = [
        f"## {suite} — {env['date']}",
        "",
        f"- Command: `{command}`",
        f"- Device: {env['device_kind']} (jax backend {env['jax_backend']}, {env['device_count']} device(s)); "
        f"CPU {env['cpu_model']}, {env['cores']} cores; load average at start {env['loadavg_1m']}",
        f"- Versions: {versions}",
        f"- Code: git {env['git'] or 'unknown'}",
    ]
    if note:
        lines.append(f"- Measured: {note}")
    return "\n".join([*lines, "", table, ""])


def append_markdown(path: pathlib.Path, section: str) -> None:
    """Appends a section; a new file starts with the header that explains the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else ""
    if not existing:
        lead = HEADER + "\n"
    else:  # one blank line between the previous block and this one
        lead = "" if existing.endswith("\n\n") else "\n" if existing.endswith("\n") else "\n\n"
    with path.open("a") as f:
        f.write(lead + section)


def run_baseline(path: str, args: Sequence[str]) -> list[dict[str, Any]]:
    """Runs `../shared/bench/hf_baseline.py ARGS` (same command, same machine state); its JSON lines."""
    import sys

    cmd = [sys.executable, path, *args]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    # Its share of a lent GPU's minutes, for planning the next command's budget.
    print(f"{pathlib.Path(path).name} {' '.join(args)}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no JSON line:\n{out.stdout[-2000:]}")
    return lines

