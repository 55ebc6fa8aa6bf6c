"""cappy_jax: train, load and serve Cappy-style scorers in JAX/Flax.

Modules are imported where used; importing the package itself does nothing heavy.
"""

__version__ = "0.1.0"
