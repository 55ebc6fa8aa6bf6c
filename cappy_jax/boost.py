"""Boosting an LLM without touching its weights: sample candidates, let the scorer pick the best.

`rerank(scorer, backend, instructions)` is the core (pure apart from the backend's sampling):
the backend samples the decoding recipe's responses (beam search + samples, `cappy_jax.data.llm`),
the scorer scores every non-empty one, and each selection method picks one candidate:

- `cappy`: the highest scorer score (ties: lowest index);
- `beam`: the beam-search output (the first candidate of a beam mode);
- `first_<mode>`: the first sample of each sampling mode (what plain decoding would return);
- `ll_sum` / `ll_mean`: the LLM's own log-likelihood of the response, summed or per token
  (only with a backend that has `log_likelihood`, such as `hf`).

Every method chooses among the same candidates of the same run, so they compare fairly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cappy_jax.data import llm as llm_lib

CAPPY = "cappy"
LL_SUM = "ll_sum"
LL_MEAN = "ll_mean"


@dataclasses.dataclass(frozen=True)
class Reranked:
    """One instruction: its candidates (recipe order) and each method's pick (an index, or None)."""

    instruction: str
    texts: tuple[str, ...]
    modes: tuple[str, ...]
    scores: np.ndarray                 # float32 [K]; NaN for empty responses (never picked)
    ll_sum: np.ndarray | None          # float64 [K], or None without self-scoring
    ll_mean: np.ndarray | None
    picks: dict[str, int | None]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: the candidates with their numbers, and each method's pick and text."""
        def num(x: Any) -> float | None:
            return None if x is None or not math.isfinite(float(x)) else float(x)

        candidates = [{"text": t, "mode": m, "score": num(self.scores[k]),
                       **({"ll_sum": num(self.ll_sum[k]), "ll_mean": num(self.ll_mean[k])}
                          if self.ll_sum is not None else {})}
                      for k, (t, m) in enumerate(zip(self.texts, self.modes))]
        return {"candidates": candidates, "best": self.picks[CAPPY],
                "response": self.texts[self.picks[CAPPY]] if self.picks[CAPPY] is not None else None,
                "baselines": {name: {"index": i, "response": None if i is None else self.texts[i]}
                              for name, i in self.picks.items() if name != CAPPY}}


def methods(recipe: Sequence[llm_lib.DecodingMode], *, self_score: bool) -> list[str]:
    """The selection methods a run reports, in report order."""
    names = [CAPPY]
    names += ["beam" if m.is_beam else f"first_{m.name}" for m in recipe]
    if self_score:
        names += [LL_SUM, LL_MEAN]
    return list(dict.fromkeys(names))


def _argmax(values: np.ndarray) -> int | None:
    """Lowest index of the largest finite value; None when no value is finite."""
    finite = np.isfinite(values)
    if not finite.any():
        return None
    return int(np.argmax(np.where(finite, values, -np.inf)))


def rerank(scorer: Any, backend: llm_lib.Backend, instructions: Sequence[str], *,
           recipe: Sequence[llm_lib.DecodingMode] = llm_lib.REFERENCE_RECIPE, self_score: bool = True,
           progress: Any = None) -> list[Reranked]:
    """Samples, scores and picks for every instruction (see the module docstring).

    `scorer` is a `cappy_jax.scoring.Scorer`; `self_score` needs `backend.log_likelihood`.
    """
    if self_score and not hasattr(backend, "log_likelihood"):
        raise ValueError(f"{backend!r} cannot score its own samples (no log_likelihood): "
                         f"pass self_score=False (--noself_score) or use the hf backend")
    samples = backend.generate(list(instructions), recipe)
    pairs = [(inst, text) for inst, cands in zip(instructions, samples) for _, text in cands if text.strip()]
    flat_scores = iter(scorer.score(pairs, progress=progress))
    ll = None
    if self_score:
        flat = [(inst, text) for inst, cands in zip(instructions, samples) for _, text in cands]
        ll = backend.log_likelihood([p[0] for p in flat], [p[1] for p in flat])
    out, k = [], 0
    for inst, cands in zip(instructions, samples):
        if not cands:
            raise ValueError(f"{backend!r} returned no candidates for instruction {inst[:60]!r}")
        texts = tuple(t for _, t in cands)
        modes = tuple(m for m, _ in cands)
        scores = np.array([next(flat_scores) if t.strip() else np.nan for t in texts], np.float32)
        picks: dict[str, int | None] = {CAPPY: _argmax(scores)}
        for mode in recipe:
            name = "beam" if mode.is_beam else f"first_{mode.name}"
            picks.setdefault(name, modes.index(mode.name) if mode.name in modes else None)
        ll_sum = ll_mean = None
        if ll is not None:
            ll_sum = ll[0][k:k + len(texts)]
            ll_mean = ll[1][k:k + len(texts)]
            picks[LL_SUM] = _argmax(ll_sum)
            picks[LL_MEAN] = _argmax(ll_mean)
        k += len(texts)
        out.append(Reranked(inst, texts, modes, scores, ll_sum, ll_mean, picks))
    return out
