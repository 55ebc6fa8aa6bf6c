import glob, time, sys, signal
from cappy_jax.data import pipeline
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append(time.time()))
files = sorted(glob.glob("/tmp/bb_full/validation-*"))
cfg = pipeline.PipelineConfig(rows=16, max_len=512, max_segments=16, open_rows=8, repeat=False)
p = pipeline.InputPipeline(files, cfg, pad_id=0)
t = time.time(); i = 0
while not got:
    next(p); i += 1; time.sleep(2)
print(f"{i} batches {time.time()-t:.2f}s; signal {time.time()-got[0]:.2f}s ago", flush=True)
t = time.time(); del p
print(f"del {time.time()-t:.2f}s", flush=True)
