import time, logging, functools, sys
from cappy_jax import train, checkpoint
from cappy_jax.data import pipeline
import orbax.checkpoint as ocp
log = logging.getLogger("timing")
def timed(cls, name):
    real = getattr(cls, name)
    @functools.wraps(real)
    def wrapper(*a, **k):
        t = time.time(); out = real(*a, **k); print(f"TIMING {time.strftime('%H:%M:%S')} {cls.__name__}.{name} {time.time() - t:.2f}s", flush=True, file=sys.stderr); return out
    setattr(cls, name, wrapper)
timed(pipeline.ReaderGroup, "save")
timed(ocp.CheckpointManager, "save")
timed(ocp.CheckpointManager, "wait_until_finished")
timed(ocp.CheckpointManager, "close")
timed(train, "prune_data_state")
timed(train, "evaluate")


sys.argv = ["train"] + sys.argv[1:]
from absl import app
train.run()
