"""Fetch BIG-bench JSON tasks and PromptSource templates from their PyPI sdists (PyPI is reachable; hubs are not).

    python -m cappy_jax.data.fetch bigbench --dest DIR [--tasks a,b,c] [--sdist PATH] [--download_dir DIR]
    python -m cappy_jax.data.fetch promptsource --dest DIR [--tasks super_glue/rte,imdb] [--sdist PATH]

Without `--sdist`, `pip download --no-deps --no-binary :all: --ignore-requires-python NAME==VERSION`
fetches the sdist (bigbench 1.0.0 is 358 MB; pip shows its progress bar on a terminal) into
`--download_dir`, or into a temporary directory removed afterwards. `--ignore-requires-python`
is needed because promptsource 0.2.3 declares Python < 3.10; nothing is installed. Note that pip
runs the sdist's `setup.py egg_info` to read its metadata.

Only data files come out, and nothing else of the sdist is kept:
- bigbench: `bigbench/benchmark_tasks/<task>/task.json` and `<task>/<subtask>/task.json`
  -> DEST/<task>/[<subtask>/]task.json. Programmatic tasks (task.py, no task.json) are skipped.
  Names are task directory names; default: every JSON task.
- promptsource: `promptsource/templates/<dataset>[/<subset>]/templates.yaml`
  -> DEST/<dataset>[/<subset>]/templates.yaml. A name is `dataset` (all its subsets) or
  `dataset/subset`; default: every dataset.

Unknown names fail before anything is written, listing close matches. Re-runs are cheap:
files already in DEST with the same size are skipped, and DEST/.cappy_fetch.json records what
was extracted, so a re-run that asks for nothing new does not download at all.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger("cappy_jax.data.fetch")

MANIFEST = ".cappy_fetch.json"


@dataclasses.dataclass(frozen=True)
class SdistSource:
    """Where one source's data lives inside its sdist, and how its files group into named units."""

    name: str
    version: str
    inner_root: str        # path inside the sdist's top directory
    data_file: str         # the file name that marks a unit
    size_hint: str         # for the log line before a download

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def sdist_name(self) -> str:
        return f"{self.name}-{self.version}.tar.gz"

    def unit_of(self, rel: tuple[str, ...]) -> str | None:
        """The unit a path (relative to inner_root) belongs to, or None if it is not extracted."""
        if len(rel) < 2 or rel[-1] != self.data_file or any(p in ("", ".", "..") for p in rel):
            return None
        if self.name == "bigbench":
            # <task>/task.json, or <task>/<subtask>/task.json (a subtask; kept only if <task>/task.json exists).
            return rel[0] if len(rel) in (2, 3) else None
        # promptsource: <dataset>/templates.yaml or <dataset>/<subset>/templates.yaml.
        return "/".join(rel[:-1]) if len(rel) in (2, 3) else None


SOURCES = {
    "bigbench": SdistSource("bigbench", "1.0.0", "bigbench/benchmark_tasks", "task.json", "358 MB"),
    "promptsource": SdistSource("promptsource", "0.2.3", "promptsource/templates", "templates.yaml", "0.2 MB"),
}


@dataclasses.dataclass(frozen=True)
class FetchResult:
    """What one fetch did: units (tasks / datasets) covered, files written and files already there."""

    dest: Path
    units: tuple[str, ...]
    written: int
    skipped: int
    downloaded: bool


@dataclasses.dataclass
class _Scan:
    files: dict[str, list[tarfile.TarInfo]]   # unit -> its data files
    other_units: set[str]                     # first-level directories without the data file (bigbench: programmatic)


def _relative(member: str, inner_root: str) -> tuple[str, ...] | None:
    parts = member.split("/")
    root = inner_root.split("/")
    # parts[0] is the sdist's top directory, e.g. bigbench-1.0.0.
    if len(parts) < len(root) + 2 or parts[1:1 + len(root)] != root:
        return None
    return tuple(parts[1 + len(root):])


def _scan(tar: tarfile.TarFile, source: SdistSource) -> _Scan:
    files: dict[str, list[tarfile.TarInfo]] = {}
    seen_dirs: set[str] = set()
    for member in tar.getmembers():
        rel = _relative(member.name.rstrip("/"), source.inner_root)
        if rel is None:
            continue
        if (len(rel) >= 2 or member.isdir()) and rel[0] not in ("", ".", ".."):
            seen_dirs.add(rel[0])
        unit = source.unit_of(rel)
        if unit is not None and member.isfile():
            files.setdefault(unit, []).append(member)
    if source.name == "bigbench":
        # A subtask file counts only under a task with its own task.json (BIG-bench's container layout).
        files = {u: ms for u, ms in files.items()
                 if any(_relative(m.name, source.inner_root) == (u, source.data_file) for m in ms)}
    top_units = {u.split("/")[0] for u in files}
    return _Scan(files=files, other_units=seen_dirs - top_units)


def _select(known: Iterable[str], other_units: Iterable[str], source: SdistSource,
            names: Sequence[str] | None) -> list[str]:
    """The units `names` ask for (a name is a unit or a prefix `name/`); unknown names raise."""
    known = sorted(known)
    if names is None:
        return known
    other_units = set(other_units)
    selected: list[str] = []
    problems: list[str] = []
    for name in names:
        matches = [u for u in known if u == name or u.startswith(name + "/")]
        if matches:
            selected.extend(m for m in matches if m not in selected)
            continue
        if name in other_units:
            problems.append(f"{name!r} has no {source.data_file} (a programmatic task?)")
            continue
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        problems.append(f"unknown {source.name} name {name!r}" + (f"; close matches: {', '.join(close)}" if close else ""))
    if problems:
        raise ValueError("; ".join(problems))
    return selected


def _dest_path(dest: Path, source: SdistSource, member: tarfile.TarInfo) -> Path:
    rel = _relative(member.name, source.inner_root)
    assert rel is not None
    return dest.joinpath(*rel)


def extract(sdist: str | Path, dest: str | Path, source: str | SdistSource,
            names: Sequence[str] | None = None) -> FetchResult:
    """Extracts the selected units' data files from a downloaded sdist into `dest` (idempotent)."""
    source = SOURCES[source] if isinstance(source, str) else source
    dest = Path(dest)
    with tarfile.open(sdist, "r:gz") as tar:
        scan = _scan(tar, source)
        if not scan.files:
            raise ValueError(f"{sdist}: no {source.inner_root}/**/{source.data_file} inside; is it the {source.requirement} sdist?")
        units = _select(scan.files, scan.other_units, source, names)
        members = sorted((m for u in units for m in scan.files[u]), key=lambda m: m.offset)
        written = skipped = 0
        for member in members:
            target = _dest_path(dest, source, member)
            if target.is_file() and target.stat().st_size == member.size:
                skipped += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fileobj = tar.extractfile(member)
            assert fileobj is not None
            tmp = target.with_name(target.name + ".part")
            with fileobj, open(tmp, "wb") as out:
                while chunk := fileobj.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, target)
            written += 1
    _update_manifest(dest, source, {u: [str(_dest_path(dest, source, m).relative_to(dest)) for m in scan.files[u]]
                                    for u in units}, complete=names is None, other_units=scan.other_units)
    log.info("%s: %d %s into %s (%d files written, %d already there)", source.name, len(units),
             "tasks" if source.name == "bigbench" else "template sets", dest, written, skipped)
    return FetchResult(dest=dest, units=tuple(units), written=written, skipped=skipped, downloaded=False)


def _read_manifest(dest: Path, source: SdistSource) -> dict:
    path = dest / MANIFEST
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if data.get("source") != source.requirement:
        return {}
    return data


def _update_manifest(dest: Path, source: SdistSource, units: dict[str, list[str]], *, complete: bool,
                     other_units: Iterable[str]) -> None:
    """Records what was extracted; once complete (all units), it also answers name look-ups offline."""
    data = _read_manifest(dest, source) or {"source": source.requirement, "complete": False, "units": {},
                                            "without_data_file": []}
    data["units"].update(units)
    data["complete"] = data["complete"] or complete
    data["without_data_file"] = sorted(other_units)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / (MANIFEST + ".part")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, dest / MANIFEST)


def _already_fetched(dest: Path, source: SdistSource, names: Sequence[str] | None) -> list[str] | None:
    """The units a previous fetch extracted that cover `names` (all files still present), else None.

    Raises for unknown names when the manifest lists every unit of the sdist.
    """
    data = _read_manifest(dest, source)
    if not data:
        return None
    recorded: dict[str, list[str]] = data["units"]
    if data["complete"]:
        # Every unit of the sdist is known: a wrong name fails here, without a 358 MB download.
        units = _select(recorded, data.get("without_data_file", []), source, names)
    elif names is None:
        return None
    else:
        units = []
        for name in names:
            matches = [u for u in recorded if u == name or u.startswith(name + "/")]
            if not matches:
                return None
            units.extend(m for m in matches if m not in units)
    if not all((dest / f).is_file() for u in units for f in recorded[u]):
        return None
    return units


def download(source: str | SdistSource, download_dir: str | Path) -> Path:
    """`pip download`s the sdist into `download_dir` (kept if already there) and returns its path."""
    source = SOURCES[source] if isinstance(source, str) else source
    download_dir = Path(download_dir)
    path = download_dir / source.sdist_name
    if path.is_file():
        log.info("using %s already downloaded", path)
        return path
    download_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--ignore-requires-python", source.requirement, "-d", str(download_dir)]
    log.info("downloading the %s sdist (%s) with pip into %s: %s", source.requirement, source.size_hint,
             download_dir, " ".join(command))
    # pip's own progress bar and messages go straight to our stdout/stderr.
    subprocess.run(command, check=True)
    if not path.is_file():
        found = sorted(p.name for p in download_dir.glob(f"{source.name}-*"))
        raise FileNotFoundError(f"pip download left no {path.name} in {download_dir} (found: {found or 'nothing'})")
    return path


def fetch(source: str, dest: str | Path, *, names: Iterable[str] | None = None, sdist: str | Path | None = None,
          download_dir: str | Path | None = None) -> FetchResult:
    """Puts the data files of `names` (all if None) under `dest`, downloading the sdist only if needed."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {sorted(SOURCES)}")
    spec = SOURCES[source]
    dest = Path(dest)
    names = None if names is None else list(dict.fromkeys(n.strip().strip("/") for n in names if n.strip()))
    if sdist is not None:
        return extract(sdist, dest, spec, names)
    done = _already_fetched(dest, spec, names)
    if done is not None:
        log.info("%s: everything asked for is already in %s (%s); nothing to download", source, dest, MANIFEST)
        n_files = sum(len(_read_manifest(dest, spec)["units"][u]) for u in done)
        return FetchResult(dest=dest, units=tuple(done), written=0, skipped=n_files, downloaded=False)
    if download_dir is not None:
        result = extract(download(spec, download_dir), dest, spec, names)
    else:
        with tempfile.TemporaryDirectory(prefix=f"cappy_fetch_{source}_") as tmp:
            result = extract(download(spec, tmp), dest, spec, names)
    return dataclasses.replace(result, downloaded=True)


def main(argv: list[str]) -> None:
    from absl import app, flags

    from cappy_jax.cli import quiet_logging

    quiet_logging()
    f = flags.FLAGS
    if len(argv) != 2 or argv[1] not in SOURCES:
        raise app.UsageError(f"expected one of {sorted(SOURCES)}, got {argv[1:]}\n{__doc__}")
    if not f.dest:
        raise app.UsageError("--dest is required")
    names = f.tasks.split(",") if f.tasks else None
    try:
        result = fetch(argv[1], f.dest, names=names, sdist=f.sdist, download_dir=f.download_dir)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from e
    print(json.dumps({"dest": str(result.dest), "units": len(result.units), "written": result.written,
                      "skipped": result.skipped, "downloaded": result.downloaded}))


def run() -> None:
    from absl import app, flags

    flags.DEFINE_string("dest", None, "Directory the task / template files go into.")
    flags.DEFINE_string("tasks", None, "Comma-separated names: BIG-bench task directories, or PromptSource "
                        "`dataset` / `dataset/subset`. Default: all.")
    flags.DEFINE_string("sdist", None, "An already downloaded sdist (.tar.gz); skips pip.")
    flags.DEFINE_string("download_dir", None, "Keep the downloaded sdist here (reused on re-runs). "
                        "Default: a temporary directory, removed afterwards.")
    app.run(main)


if __name__ == "__main__":
    run()
