import glob, time, sys
import tensorflow as tf
from cappy_jax.data import pipeline
files = sorted(glob.glob("/tmp/bb_full/validation-*"))
cfg = pipeline.PipelineConfig(rows=16, max_len=512, max_segments=16, open_rows=8, repeat=False)
if sys.argv[1] == "noauto":
    real = pipeline.make_dataset
    def md(f, c, *, pad_id):
        o = tf.data.Options(); o.autotune.enabled = False
        return real(f, c, pad_id=pad_id).with_options(o)
    pipeline.make_dataset = md
p = pipeline.InputPipeline(files, cfg, pad_id=0)
next(p); t = time.time(); n = 0
for b in p:
    n += int((b["pair_index"] >= 0).sum())
    if n > 100000: break
print(sys.argv[1], f"{n/(time.time()-t):,.0f} pairs/s", flush=True)
