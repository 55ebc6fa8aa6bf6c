"""What every `python -m cappy_jax.X` entry point shares."""

from __future__ import annotations

import logging


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
