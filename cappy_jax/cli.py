"""What every `python -m cappy_jax.X` entry point shares."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import IO, Any


def quiet_logging() -> None:
    """Our INFO messages stay; the libraries' INFO chatter (Orbax logs every file it writes) goes.

    Call inside `main`, after absl has parsed flags, so `--verbosity` still wins when given.
    """
    from absl import flags
    from absl import logging as absl_logging

    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    ours = logging.getLogger("cappy_jax")
    ours.setLevel(logging.INFO)
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        ours.addHandler(handler)
        ours.propagate = False


def apply_llm_shorthands(config: Any, *, llm: str | None = None, llm_model: str | None = None,
                         llm_base_url: str | None = None) -> None:
    """`--llm NAME --llm_model M --llm_base_url URL` into `config.llm` (they win over `--config.llm.*`)."""
    if llm is not None:
        config.llm.name = llm
    name = config.llm.name
    if llm_model is not None:
        if name == "hf":
            config.llm.hf.model_dir = llm_model
        elif name == "openai":
            config.llm.openai.model = llm_model
        else:
            raise ValueError(f"--llm_model needs a backend: pass --llm hf (a local model dir) or --llm openai "
                             f"(a served model name), not {name!r}")
    if llm_base_url is not None:
        if name != "openai":
            raise ValueError(f"--llm_base_url is for --llm openai, but the backend is {name!r}")
        config.llm.openai.base_url = llm_base_url


class Progress:
    """A progress line on stderr for slow loops: done/total, rate and ETA, at most every `every` seconds.

    Call it with the number of items just finished (it is a `scoring.Progress`); `close()` prints
    the final line. Silent when the total is below `min_total`, so small inputs stay quiet.
    """

    def __init__(self, total: int, what: str = "pairs", *, every: float = 2.0, min_total: int = 1000) -> None:
        import time

        self.total, self.what, self.every = int(total), what, every
        self.enabled = self.total >= min_total
        self.done = 0
        self._clock = time.monotonic
        self._start = self._last = self._clock()

    def __call__(self, n: int) -> None:
        self.done += int(n)
        now = self._clock()
        if self.enabled and now - self._last >= self.every:
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        import sys

        rate = self.done / max(now - self._start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        print(f"\r{self.done:,}/{self.total:,} {self.what} ({self.done / max(self.total, 1):.0%}), "
              f"{rate:,.0f} {self.what}/s, ETA {eta:,.0f}s ", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        import sys

        if self.enabled:
            self._print(self._clock())
            print(file=sys.stderr, flush=True)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, tmp_path: str | os.PathLike | None = None,
                  keep_partial: bool = False) -> Iterator[IO[str]]:
    """A text file that replaces `path` only when the block succeeds, so a crash never leaves half a file.

    It is written at `tmp_path` (default `.NAME.PID.tmp` beside `path`), fsynced and renamed over
    `path`; on failure it is removed, or kept with `keep_partial` (a long job's finished records).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.fspath(tmp_path) if tmp_path is not None else os.path.join(
        directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    f = open(tmp, "w", encoding="utf-8")
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        if not keep_partial:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        raise


def compilation_cache_path(setting: str, workdir: str) -> str | None:
    """Where compiled programs are kept: `setting` under `workdir` when relative, as given when absolute
    or a URL (gs://), None when empty. Pure."""
    if not setting:
        return None
    if "://" in setting or os.path.isabs(setting):
        return setting
    return workdir.rstrip("/") + "/" + setting


def enable_compilation_cache(path: str | None) -> None:
    """Process-wide, so only entry points call it: every compiled program goes to (and comes from) `path`
    (`~` expanded; empty or None: nothing is cached)."""
    if not path:
        return
    import jax

    path = os.path.expanduser(path)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    logging.getLogger("cappy_jax").info("compiled programs are cached in %s", path)
