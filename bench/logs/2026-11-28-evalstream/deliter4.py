import glob, time, sys, signal, os
import tensorflow as tf
from cappy_jax.data import pipeline
mode = sys.argv[1]  # sig | nosig | sig-noauto
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append(time.time()))
files = sorted(glob.glob("/tmp/bb_full/validation-*"))
cfg = pipeline.PipelineConfig(rows=16, max_len=512, max_segments=16, open_rows=8, repeat=False)
if mode.endswith("noauto"):
    real = pipeline.make_dataset
    def md(f, c, *, pad_id):
        o = tf.data.Options(); o.autotune.enabled = False
        return real(f, c, pad_id=pad_id).with_options(o)
    pipeline.make_dataset = md
p = pipeline.InputPipeline(files, cfg, pad_id=0)
t = time.time(); i = 0
while not got and i < 30:
    next(p); i += 1; time.sleep(2)
print(f"{mode} {i} batches {time.time()-t:.2f}s", flush=True)
t = time.time(); del p
print(f"{mode} del {time.time()-t:.2f}s", flush=True)
