import glob, time, sys, concurrent.futures as cf, shutil
from cappy_jax.data import pipeline
tfiles = sorted(glob.glob("/tmp/bb_full/train-*"))
readers = list(range(16))
g = pipeline.ReaderGroup(tfiles, readers, 16, pipeline.PipelineConfig(rows=1, max_len=512, max_segments=16), pad_id=0)
for _ in range(4): next(g)
for trial in range(2):
    for mode in ("seq", "threads"):
        d = f"/tmp/savepar/{mode}{trial}"; shutil.rmtree(d, ignore_errors=True)
        t = time.time()
        if mode == "seq":
            g.save(lambda r: f"{d}/reader_{r}")
        else:
            with cf.ThreadPoolExecutor(16) as ex:
                list(ex.map(lambda rs: rs[1].save(f"{d}/reader_{rs[0]}"), zip(g.readers, g._streams)))
        print(mode, f"{time.time()-t:.2f}s", flush=True)
