"""Joining a multi-host JAX cluster: JAX's own runtime (`jax.distributed`), no home-made cluster code.

Where the settings come from, first match wins:
1. flags (`--coordinator_address HOST:PORT --num_processes N --process_id I`) or the matching
   environment variables `CAPPY_COORDINATOR_ADDRESS`, `CAPPY_NUM_PROCESSES`, `CAPPY_PROCESS_ID`
   (GPU hosts, several CPU processes on one machine);
2. JAX's auto-detection (`jax.distributed.initialize()` with no arguments) on Cloud TPU VMs,
   Slurm and Open MPI, used when `mode='on'` or when `mode='auto'` sees one of their variables;
3. otherwise a single process: nothing to initialize.

CPU processes exchange collectives over gloo (`jax_cpu_collectives_implementation`), set here
before the backend starts. Call `initialize` first thing in a CLI's `main`, before any JAX
computation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

log = logging.getLogger("cappy_jax.distributed")

MODES = ("auto", "on", "off")
ENV = {"coordinator_address": "CAPPY_COORDINATOR_ADDRESS", "num_processes": "CAPPY_NUM_PROCESSES",
       "process_id": "CAPPY_PROCESS_ID"}
# Variables by which TPU VMs, Slurm and Open MPI announce a cluster JAX can detect by itself.
CLUSTER_MARKERS = ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS", "SLURM_JOB_ID",
                   "OMPI_COMM_WORLD_SIZE")


@dataclasses.dataclass(frozen=True)
class Settings:
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1

    @property
    def explicit(self) -> bool:
        return bool(self.coordinator_address)


def resolve(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
            env: Mapping[str, str] | None = None) -> Settings:
    """Flags, else environment variables (see the module docstring); checked for consistency. Pure."""
    env = os.environ if env is None else env
    address = coordinator_address or env.get(ENV["coordinator_address"], "")
    count = num_processes or int(env.get(ENV["num_processes"], "0") or 0)
    index = process_id if process_id >= 0 else int(env.get(ENV["process_id"], "-1") or -1)
    given = {"coordinator_address": bool(address), "num_processes": count > 0, "process_id": index >= 0}
    if any(given.values()) and not all(given.values()):
        missing = [f"--{k} (or {ENV[k]})" for k, ok in given.items() if not ok]
        raise ValueError(f"an explicit cluster needs all three settings; missing {', '.join(missing)}")
    if address and not 0 <= index < count:
        raise ValueError(f"process_id {index} is outside 0..{count - 1} (num_processes {count})")
    if address and ":" not in address:
        raise ValueError(f"coordinator_address {address!r} needs a port: HOST:PORT")
    return Settings(address, count, index)


def initialize(settings: Settings, mode: str = "auto", env: Mapping[str, str] | None = None) -> bool:
    """Joins the cluster when there is one; returns whether `jax.distributed` was initialized."""
    import jax

    if mode not in MODES:
        raise ValueError(f"distributed mode {mode!r}; expected one of {MODES}")
    env = os.environ if env is None else env
    if mode == "off":
        return False
    detected = [m for m in CLUSTER_MARKERS if m in env]
    if not settings.explicit and mode == "auto" and not detected:
        return False
    if jax.config.jax_platforms in (None, "", "cpu") or settings.explicit:
        # Harmless on accelerators; needed for CPU processes to run collectives together.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if settings.explicit:
        jax.distributed.initialize(settings.coordinator_address, num_processes=settings.num_processes,
                                   process_id=settings.process_id)
    else:
        log.info("joining the cluster JAX detects (%s)", ", ".join(detected) or "mode=on")
        jax.distributed.initialize()
    log.info("process %d of %d, %d local devices of %d", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    if jax.process_index() != 0:  # one progress log for the cluster; warnings still come from every host
        logging.getLogger("cappy_jax").setLevel(logging.WARNING)
    return True
