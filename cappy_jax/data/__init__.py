"""Data construction: sources -> examples -> labelled candidates -> shards -> packed batches.

TensorFlow is imported only inside this package (shards and tf.data), never by model or scoring code.
"""
