import sys, runpy
import tensorflow as tf
from cappy_jax.data import pipeline
real = pipeline.make_dataset
def md(f, c, *, pad_id):
    o = tf.data.Options(); o.autotune.enabled = False
    return real(f, c, pad_id=pad_id).with_options(o)
if sys.argv[1] == "noauto":
    pipeline.make_dataset = md
sys.argv = ["bench.run", "--suite", "input", "--cases", "packed,packed-bigbench", "--output", f"/tmp/in_{sys.argv[1]}.jsonl", "--no-markdown"]
runpy.run_module("bench.run", run_name="__main__")
