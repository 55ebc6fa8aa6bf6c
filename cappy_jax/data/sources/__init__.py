"""Sources turn raw data into `cappy_jax.data.records.Example`s, one module per source."""
