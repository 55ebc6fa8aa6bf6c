"""Instruction/response pair tokenization, identical to a HF fast tokenizer.

Cappy scores an (instruction, response) pair with a RoBERTa/BERT style
encoder, so the model must see exactly the ids that
``transformers.AutoTokenizer.from_pretrained(DIR)(instruction, response)``
would give: ``<s> A </s></s> B </s>`` for RoBERTa, ``[CLS] A [SEP] B [SEP]``
with token type ids 0/1 for BERT.  We get there with the ``tokenizers``
library alone (``transformers`` is not a runtime dependency): both sides are
encoded without specials, truncated, then joined by the post-processor stored
in ``DIR/tokenizer.json``, so the template of the checkpoint decides the
special tokens and the type ids, not this module.

Truncation rule
---------------
A pair may hold at most ``max_len`` tokens.  The specials of a pair are
always kept, so the text budget is ``budget = max_len - num_special_tokens``
(it must be at least 2, one token per side).  With ``la``/``lb`` the token
counts of the instruction/response and ``ka``/``kb`` the counts kept:

* If ``la + lb <= budget`` nothing is cut.
* Otherwise the response is what gets scored, so it is kept whole whenever
  the instruction can still keep ``min(la, budget // 2)`` tokens; the
  instruction is then cut from its end (right side, like HF) to whatever the
  response leaves.
* If the response is too long for that, the instruction keeps
  ``min(la, budget // 2)`` tokens and the response is cut from its end to the
  rest of the budget.

In one line: ``ka = min(la, max(budget - lb, min(la, budget // 2)))`` and
``kb = min(lb, budget - ka)``.  This equals HF's ``truncation='only_first'``
when the response fits in half the budget and ``truncation='only_second'``
when the instruction is shorter than half of it.  Every truncation is
reported: ``EncodedPairs.num_truncated`` counts the pairs that lost tokens
and a warning is logged, never a silent cut.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

import numpy as np
import tokenizers

logger = logging.getLogger(__name__)

# Pad tokens of the model families we support, tried when the config is silent.
_PAD_CANDIDATES = ("<pad>", "[PAD]")


def truncation_lengths(len_instruction: int, len_response: int, budget: int) -> tuple[int, int]:
    """Token counts ``(ka, kb)`` kept of each side; see the module docstring for the rule.

    Kept pure (plain ints in, ints out) so the rule can be tested and reused
    without a tokenizer.
    """
    la, lb = int(len_instruction), int(len_response)
    if la < 0 or lb < 0:
        raise ValueError(f"token counts must be >= 0, got instruction={la}, response={lb}")
    if budget < 2:
        raise ValueError(f"token budget must be >= 2 (one token per side), got {budget}")
    ka = min(la, max(budget - lb, min(la, budget // 2)))
    kb = min(lb, budget - ka)
    return ka, kb


@dataclasses.dataclass(frozen=True, eq=False)  # eq on lists of arrays would be ambiguous
class EncodedPairs:
    """Unpadded ids of a batch of pairs; padding/bucketing is the caller's choice."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    truncated: np.ndarray  # bool per pair: did it lose tokens?

    @property
    def num_truncated(self) -> int:
        return int(np.sum(self.truncated))

    def lengths(self) -> np.ndarray:
        """Per-pair lengths (specials included), int32, for length bucketing."""
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int32, count=len(self.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)


def _token_content(value: object) -> str | None:
    """Token text from a config entry, which is a str or an AddedToken dict depending on the writer."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _find_pad_token_id(tokenizer: tokenizers.Tokenizer, directory: str) -> int:
    """Pad id as HF would resolve it: the configured pad token, else a family default."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        config_path = os.path.join(directory, name)
        if not os.path.isfile(config_path):
            continue
        with open(config_path, encoding="utf-8") as f:
            content = _token_content(json.load(f).get("pad_token"))
        if content is None:
            continue
        pad_id = tokenizer.token_to_id(content)
        if pad_id is None:
            raise ValueError(f"{config_path}: pad_token {content!r} is not in the vocabulary of tokenizer.json")
        return pad_id
    for content in _PAD_CANDIDATES:
        pad_id = tokenizer.token_to_id(content)
        if pad_id is not None:
            return pad_id
    raise ValueError(
        f"{directory}: no padding token found; tokenizer_config.json names no pad_token and neither of "
        f"{', '.join(map(repr, _PAD_CANDIDATES))} is in the vocabulary of tokenizer.json"
    )


def _truncated_copy(encoding: tokenizers.Encoding, length: int) -> tokenizers.Encoding:
    """A copy of ``encoding`` holding its first ``length`` tokens.

    Copies because encodings are shared between pairs with the same text.
    Truncating in two steps leaves a single overflowing piece:
    ``Encoding.truncate`` keeps the cut tail as overflowing pieces of
    ``length`` tokens, and the post-processor pairs every overflowing piece of
    one side with every piece of the other, which costs quadratic time on long
    texts.  A second ``truncate`` replaces the pieces with those of the
    (at most ``2 * length`` long) result.
    """
    copy = tokenizers.Encoding.merge([encoding], growing_offsets=False)
    if len(copy) > 2 * length:
        copy.truncate(2 * length)
    copy.truncate(length)
    return copy


class NoTokensError(ValueError):
    """A text with characters, none of which the tokenizer keeps (e.g. only control or zero-width
    characters, which a BERT normalizer drops): there is nothing to score. `index` is the pair's."""

    def __init__(self, index: int, field: str, text: str) -> None:
        shown = repr(text if len(text) <= 60 else text[:60] + "...")
        super().__init__(f"pair {index}: {field} {shown} has no tokens after tokenization: the tokenizer drops every "
                         f"one of its characters")
        self.index, self.field = index, field


def _check_texts(instructions: Sequence[str], responses: Sequence[str]) -> None:
    """Reject bad input with the pair index, since a batch can hold thousands of pairs."""
    for name, texts in (("instructions", instructions), ("responses", responses)):
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"{name} must be a sequence of strings, not a single {type(texts).__name__}")
    if len(instructions) != len(responses):
        raise ValueError(
            f"got {len(instructions)} instructions but {len(responses)} responses; they must pair up one to one"
        )
    for i, (instruction, response) in enumerate(zip(instructions, responses)):
        for field, text in (("instruction", instruction), ("response", response)):
            if not isinstance(text, str):
                raise TypeError(f"pair {i}: {field} must be a str, got {type(text).__name__}")
            if not text.strip():
                raise ValueError(f"pair {i}: {field} is empty" + (" (whitespace only)" if text else ""))


class PairTokenizer:
    """Encodes (instruction, response) pairs the way the checkpoint's HF fast tokenizer does."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, pad_token_id: int) -> None:
        if not isinstance(tokenizer, tokenizers.Tokenizer):
            raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if tokenizer.truncation is not None or tokenizer.padding is not None:
            # A tokenizer.json saved with truncation/padding on would cut or pad
            # each side on its own; disable both, on a copy so the caller's
            # object is left as it was.
            tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())
            tokenizer.no_truncation()
            tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, (int, np.integer)):
            raise TypeError(f"pad_token_id must be an int, got {type(pad_token_id).__name__}")
        if not 0 <= pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {pad_token_id} is outside the vocabulary [0, {self.vocab_size})")
        self.pad_token_id: int = int(pad_token_id)
        self.num_special_tokens: int = tokenizer.num_special_tokens_to_add(is_pair=True)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> PairTokenizer:
        """Load ``path/tokenizer.json``, the file HF fast tokenizers save, with its pad token."""
        directory = os.fspath(path)
        tokenizer_path = os.path.join(directory, "tokenizer.json")
        if not os.path.isfile(tokenizer_path):
            raise FileNotFoundError(
                f"no tokenizer.json in {directory!r}: a tokenizer.json is required; save one with "
                f"`AutoTokenizer.from_pretrained(...).save_pretrained({directory!r})`"
            )
        tokenizer = tokenizers.Tokenizer.from_file(tokenizer_path)
        return cls(tokenizer, _find_pad_token_id(tokenizer, directory))

    def _encode_unique(
        self, texts: Sequence[str], budget: int
    ) -> tuple[list[int], list[tokenizers.Encoding], list[int]]:
        """Encode each distinct text once and cut it to `budget` tokens once: Cappy pairs one instruction with
        many responses, and copying a long text's encoding for each of its pairs cost more than encoding it.

        Returns each text's index among the distinct texts, and per distinct text its encoding (at most
        `budget` tokens) and its full token count, which the truncation rule reads.
        """
        index: dict[str, int] = {}
        positions = [index.setdefault(text, len(index)) for text in texts]
        encodings = self._tokenizer.encode_batch(list(index), add_special_tokens=False)
        lengths = [len(e) for e in encodings]
        clipped = [e if len(e) <= budget else _truncated_copy(e, budget) for e in encodings]
        return positions, clipped, lengths

    def encode_pairs(
        self, instructions: Sequence[str], responses: Sequence[str], max_len: int = 512, *, warn: bool = True
    ) -> EncodedPairs:
        """Ids of ``tokenizer(instruction, response)`` per pair, cut to ``max_len`` by the module's rule.

        ``warn=False`` is for callers that report ``EncodedPairs.truncated`` themselves (the data build
        counts them in its manifest) instead of a warning per call.
        """
        if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)):
            raise TypeError(f"max_len must be an int, got {type(max_len).__name__}")
        budget = int(max_len) - self.num_special_tokens
        if budget < 2:
            raise ValueError(
                f"max_len={max_len} leaves {budget} tokens for text after the {self.num_special_tokens} "
                f"special tokens of a pair; need at least 2 (one per side)"
            )
        _check_texts(instructions, responses)
        if len(instructions) == 0:
            return EncodedPairs(input_ids=[], token_type_ids=[], truncated=np.zeros(0, bool))

        index_a, encoded_a, lengths_a = self._encode_unique(instructions, budget)
        index_b, encoded_b, lengths_b = self._encode_unique(responses, budget)
        input_ids: list[np.ndarray] = []
        token_type_ids: list[np.ndarray] = []
        truncated = np.zeros(len(instructions), bool)
        cuts_a: dict[tuple[int, int], tokenizers.Encoding] = {}
        cuts_b: dict[tuple[int, int], tokenizers.Encoding] = {}

        def cut(encodings: list[tokenizers.Encoding], u: int, k: int, cuts: dict) -> tokenizers.Encoding:
            """Distinct text `u` cut to `k` tokens, copied once per (text, length): a long instruction's
            candidates often keep the same share of it."""
            if k == len(encodings[u]):
                return encodings[u]
            if (u, k) not in cuts:
                cuts[u, k] = _truncated_copy(encodings[u], k)
            return cuts[u, k]

        for i, (a, b) in enumerate(zip(index_a, index_b)):
            la, lb = lengths_a[a], lengths_b[b]
            for field, n, texts in (("instruction", la, instructions), ("response", lb, responses)):
                if n == 0:
                    raise NoTokensError(i, field, texts[i])
            ka, kb = truncation_lengths(la, lb, budget)
            enc_a, enc_b = cut(encoded_a, a, ka, cuts_a), cut(encoded_b, b, kb, cuts_b)
            truncated[i] = (ka, kb) != (la, lb)
            pair = self._tokenizer.post_process(enc_a, enc_b, add_special_tokens=True)
            if len(pair) != ka + kb + self.num_special_tokens:
                raise RuntimeError(
                    f"pair {i}: the post-processor gave {len(pair)} tokens, expected "
                    f"{ka} + {kb} + {self.num_special_tokens} specials; unsupported tokenizer.json template"
                )
            input_ids.append(np.asarray(pair.ids, dtype=np.int32))
            token_type_ids.append(np.asarray(pair.type_ids, dtype=np.int32))

        if warn and truncated.any():
            logger.warning(
                "%d of %d pairs were truncated to %d tokens", truncated.sum(), len(input_ids), max_len
            )
        return EncodedPairs(input_ids=input_ids, token_type_ids=token_type_ids, truncated=truncated)

    def has_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """Per text, whether the tokenizer keeps any of it (`encode_pairs` raises `NoTokensError` otherwise)."""
        distinct = list(dict.fromkeys(texts))
        kept = {t: len(e) > 0 for t, e in zip(distinct, self._tokenizer.encode_batch(distinct, add_special_tokens=False))}
        return np.array([kept[t] for t in texts], bool)

    def encode_texts(self, texts: Sequence[str], max_len: int = 512) -> EncodedPairs:
        """Single texts as the tokenizer encodes one sequence (`[CLS] text [SEP]`), cut from the end.

        For sentence-embedding uses of the encoder (e.g. the zero-shot cosine baseline).
        """
        _check_texts(texts, texts)
        budget = int(max_len) - self._tokenizer.num_special_tokens_to_add(is_pair=False)
        if budget < 1:
            raise ValueError(f"max_len={max_len} leaves no room for text after the special tokens")
        input_ids, token_type_ids = [], []
        truncated = np.zeros(len(texts), bool)
        positions, encodings, lengths = self._encode_unique(list(texts), budget)
        for i, u in enumerate(positions):
            if lengths[u] == 0:
                raise NoTokensError(i, "text", texts[i])
            enc, truncated[i] = encodings[u], lengths[u] > budget
            single = self._tokenizer.post_process(enc, None, add_special_tokens=True)
            input_ids.append(np.asarray(single.ids, dtype=np.int32))
            token_type_ids.append(np.asarray(single.type_ids, dtype=np.int32))
        return EncodedPairs(input_ids=input_ids, token_type_ids=token_type_ids, truncated=truncated)

