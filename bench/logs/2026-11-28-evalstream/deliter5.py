import signal, sys, threading, time
mode = sys.argv[1]
got = []
if mode == "blocked":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    def waiter():
        signal.sigwait({signal.SIGTERM}); got.append(time.time())
    threading.Thread(target=waiter, daemon=True).start()
else:
    signal.signal(signal.SIGTERM, lambda *a: got.append(time.time()))
import glob
from cappy_jax.data import pipeline
files = sorted(glob.glob("/tmp/bb_full/validation-*"))
cfg = pipeline.PipelineConfig(rows=16, max_len=512, max_segments=16, open_rows=8, repeat=False)
p = pipeline.InputPipeline(files, cfg, pad_id=0)
t = time.time(); i = 0
while not got and i < 40:
    next(p); i += 1; time.sleep(2)
print(f"{mode} {i} batches {time.time()-t:.2f}s", flush=True)
t = time.time(); del p
print(f"{mode} del {time.time()-t:.2f}s", flush=True)
