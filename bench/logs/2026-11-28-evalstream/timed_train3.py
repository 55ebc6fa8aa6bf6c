import sys
exec(open("/tmp/timed_train.py").read().split("import faulthandler")[0])
import tensorflow as tf
_real = pipeline.make_dataset
def make_dataset(files, config, *, pad_id):
    ds = _real(files, config, pad_id=pad_id)
    if not config.repeat:
        o = tf.data.Options(); o.autotune.enabled = False; ds = ds.with_options(o)
        print("TIMING eval pipeline without autotune", file=sys.stderr, flush=True)
    return ds
pipeline.make_dataset = make_dataset
sys.argv = ["train"] + sys.argv[1:]
train.run()
