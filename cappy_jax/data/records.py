"""The records that flow through data construction, as plain frozen dataclasses.

A source yields `Example`s (one instruction with its references and, for
classification, its answer choices). `candidates.py` turns each Example into
labelled `Candidate`s: the (instruction, response, label) triples Cappy trains on.
`group_id` ties candidates of one example together, so evaluation can ask
whether the top-scored candidate of a group is a correct one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

# Candidate kinds, written into every shard record and counted in the manifest.
REFERENCE = "reference"      # a ground-truth response: 1.0
CHOICE = "choice"            # an answer choice of a classification example: 1.0 if correct, else 0.0
NEGATIVE = "negative"        # a reference of another example of the same task: 0.0
CORRUPTED = "corrupted"      # a reference with deletions/swaps/truncation: Rouge-L against the references
LLM_PREFIX = "llm:"          # an LLM sample, e.g. "llm:beam", "llm:top_p": Rouge-L against the references
KINDS = (REFERENCE, CHOICE, NEGATIVE, CORRUPTED)
SPLITS = ("train", "validation", "heldout")


def stable_hash64(*parts: Any) -> int:
    """A stable 64-bit hash (Python's own `hash` is salted per process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def split_of(group_id: str, *, heldout: bool, validation_fraction: float, seed: int) -> str:
    """Held-out units go whole to `heldout`; of the others, whole example groups go to `validation`.

    Lives here, not in the Beam build, so evaluation finds the same validation examples without Beam.
    """
    if heldout:
        return "heldout"
    bucket = stable_hash64(seed, "split", group_id) % 1_000_000
    return "validation" if bucket < validation_fraction * 1_000_000 else "train"


@dataclasses.dataclass(frozen=True)
class Example:
    """One instruction of one task.

    `references` are the correct responses. For classification, `choices` lists
    every answer choice and the correct ones also appear in `references`.
    """

    task: str
    example_id: str
    instruction: str
    references: tuple[str, ...]
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"task {self.task!r} example {self.example_id!r}"
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise ValueError(f"{where}: empty instruction")
        if not self.references:
            raise ValueError(f"{where}: no reference (correct response)")
        for r in (*self.references, *self.choices):
            if not isinstance(r, str):
                raise TypeError(f"{where}: responses must be str, got {type(r).__name__}")
        if self.choices and not set(self.references) <= set(self.choices):
            raise ValueError(f"{where}: a reference is not among the choices")

    @property
    def group_id(self) -> str:
        return f"{self.task}/{self.example_id}"

    @property
    def is_classification(self) -> bool:
        return bool(self.choices)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A labelled (instruction, response) pair: one training record."""

    task: str
    group_id: str
    instruction: str
    response: str
    label: float
    kind: str

    def __post_init__(self) -> None:
        if not (isinstance(self.label, (int, float)) and math.isfinite(self.label) and 0.0 <= self.label <= 1.0):
            raise ValueError(f"{self.group_id}: label {self.label!r} of a {self.kind} candidate is outside [0, 1]")
        if not (self.kind in KINDS or self.kind.startswith(LLM_PREFIX)):
            raise ValueError(f"{self.group_id}: unknown candidate kind {self.kind!r}")
