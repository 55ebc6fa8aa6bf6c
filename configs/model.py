"""Scorer architectures, as data. `get_config('large')` is roberta-large, the paper's Cappy.

Usage: `ModelConfig.from_dict(get_config(name).to_dict())`; training configs embed one
of these under `config.model`. Checkpoint conversions (`convert from-hf`) take the
architecture from the HF `config.json` instead.
"""

# RoBERTa's position table has 2 extra rows: ids count from padding_idx + 1 = 2.
_ROBERTA = dict(family="roberta", vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                layer_norm_eps=1e-5, hidden_act="gelu", pad_token_id=1, position_offset=2,
                head_activation="sigmoid", dropout_rate=0.1, dtype="auto", remat=False,
                scan_layers=False, attention="auto", initializer_range=0.02)

VARIANTS = {
    # Seconds on a CPU: tests and smoke runs.
    "tiny": dict(_ROBERTA, vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
                 intermediate_size=128, max_position_embeddings=130),
    "base": dict(_ROBERTA, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "large": dict(_ROBERTA, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
}


def get_config(variant: str = "large") -> "ml_collections.ConfigDict":
    import ml_collections  # here, so VARIANTS and RULES import where ml_collections is absent (GPU bench)

    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; choose one of {sorted(VARIANTS)}")
    config = ml_collections.ConfigDict(VARIANTS[variant])
    config.lock()
    return config
