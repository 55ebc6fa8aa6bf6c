"""Pluggable LLM backends that sample candidate responses for Cappy's weak supervision.

A backend answers `generate(instructions, recipe)` with, per instruction, the
(mode name, text) pairs the recipe asks for; `candidates.py` labels them with
Rouge-L and drops empty or repeated ones (backends return every sample).

The recipe is a sequence of `DecodingMode`s whose kwargs use Hugging Face
`generate` names. `REFERENCE_RECIPE` is the reference implementation's: beam
search with 4 beams (1 response) plus 4 samples each from plain sampling,
temperature 0.9, top-k 40 and top-p 0.95, i.e. 17 responses per instruction,
with 3..64 new tokens; inputs are truncated to 512 tokens (`max_input_tokens`
of the backends).

Backends:
- `HFBackend`: a local transformers directory, seq2seq or causal, batched on
  torch; also `log_likelihood` for self-scoring baselines.
- `OpenAIBackend`: any OpenAI-compatible HTTP server (vLLM, TGI, llama.cpp,
  hosted APIs), standard library only, with bounded concurrency and retries.
- `NullBackend` ('none'): no LLM samples.
`make_backend(config)` builds one from a plain dict. Given `cache_dir`, the HF and
OpenAI backends keep their answers in an on-disk `ResponseCache`, so a stopped
data build resumes where it was.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import http.client
import inspect
import json
import logging
import os
import pathlib
import random
import tempfile
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

REFERENCE_MAX_INPUT_TOKENS = 512


@dataclasses.dataclass(frozen=True)
class DecodingMode:
    """One decoding strategy: `num_return` responses per instruction from HF `generate(**kwargs)`."""

    name: str
    num_return: int
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"decoding mode name must be a non-empty str, got {self.name!r}")
        if self.num_return < 1:
            raise ValueError(f"mode {self.name!r}: num_return must be >= 1")
        # A read-only copy: recipes are shared constants and must not be mutated by a caller.
        object.__setattr__(self, "kwargs", types.MappingProxyType(dict(self.kwargs)))

    @property
    def is_beam(self) -> bool:
        return not self.kwargs.get("do_sample", False) and int(self.kwargs.get("num_beams", 1)) > 1


_LENGTHS = {"min_new_tokens": 3, "max_new_tokens": 64}
# Sampling modes set temperature, top_k and top_p explicitly: a model's generation_config
# may carry other defaults (HF used top_k=50), which would silently change "plain sampling".
REFERENCE_RECIPE: tuple[DecodingMode, ...] = (
    DecodingMode("beam", 1, {"do_sample": False, "num_beams": 4, **_LENGTHS}),
    DecodingMode("sample", 4, {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, **_LENGTHS}),
    DecodingMode("temperature", 4, {"do_sample": True, "temperature": 0.9, "top_k": 0, "top_p": 1.0, **_LENGTHS}),
    DecodingMode("top_k", 4, {"do_sample": True, "temperature": 1.0, "top_k": 40, "top_p": 1.0, **_LENGTHS}),
    DecodingMode("top_p", 4, {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 0.95, **_LENGTHS}),
)


def responses_per_instruction(recipe: Sequence[DecodingMode]) -> int:
    """How many (mode, text) pairs a backend returns per instruction (17 for the reference recipe)."""
    return sum(m.num_return for m in recipe)


@runtime_checkable
class Backend(Protocol):
    """Anything that samples responses: per instruction, (mode name, text) in recipe order."""

    def generate(self, instructions: Sequence[str],
                 recipe: Sequence[DecodingMode] = REFERENCE_RECIPE) -> list[list[tuple[str, str]]]: ...


class NullBackend:
    """No LLM: every instruction gets no samples (candidates come from references only)."""

    def generate(self, instructions: Sequence[str],
                 recipe: Sequence[DecodingMode] = REFERENCE_RECIPE) -> list[list[tuple[str, str]]]:
        return [[] for _ in instructions]

    def __repr__(self) -> str:
        return "NullBackend()"


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


class ResponseCache:
    """An LLM's answers on disk: one JSON file per request, named by the sha256 of the request's description
    (everything its answer depends on) and written atomically (temp file, fsync, rename), so a re-run never
    pays twice for a request and a crash never leaves a partial file. A file that cannot be read is logged
    and asked again."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)

    @staticmethod
    def key(description: Mapping[str, Any]) -> str:
        blob = json.dumps(description, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> pathlib.Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[str] | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return list(json.loads(path.read_text("utf-8"))["texts"])
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("ignoring unreadable cache file %s", path)
            return None

    def put(self, key: str, description: Mapping[str, Any], texts: Sequence[str]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({**description, "texts": list(texts)}, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise


class HFBackend:
    """A local transformers model directory (seq2seq or causal LM), batched on torch.

    Causal models get left padding (generation continues from the last real token)
    and the prompt is cut from their outputs. Sampling is seeded per (batch texts, mode)
    inside `torch.random.fork_rng`, so results depend on `seed` and the batch's
    instructions only (not on how many batches came before: a caller that streams
    chunks does not reuse seeds), and the caller's global torch RNG state is left as it was.
    With `cache_dir`, each (batch, mode)'s outputs are kept (`ResponseCache`), keyed by
    everything they depend on (the model directory's files by name, size and mtime, device,
    dtype, seed, input cut, mode, the batch's instructions, torch and transformers versions):
    a data build stopped after hours of sampling resumes where it was.
    """

    def __init__(self, model_dir: str | os.PathLike, batch_size: int = 8, device: str = "cpu", seed: int = 0,
                 *, max_input_tokens: int = REFERENCE_MAX_INPUT_TOKENS, dtype: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model_dir = str(model_dir)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.seed = seed
        self.max_input_tokens = max_input_tokens
        config = AutoConfig.from_pretrained(self.model_dir)
        self.is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        load_kw = {"dtype": getattr(torch, dtype)} if dtype else {}
        cls = AutoModelForSeq2SeqLM if self.is_seq2seq else AutoModelForCausalLM
        self.model = cls.from_pretrained(self.model_dir, **load_kw).to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token_id is None:
                raise ValueError(f"{self.model_dir}: tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.is_seq2seq:
            self.tokenizer.padding_side = "left"
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self._described = {"backend": "hf", "model": _dir_fingerprint(self.model_dir), "device": self.device.type,
                           "dtype": str(self.model.dtype), "seed": seed, "max_input_tokens": max_input_tokens,
                           "versions": {"torch": torch.__version__, "transformers": _transformers_version()}}

    def __repr__(self) -> str:
        kind = "seq2seq" if self.is_seq2seq else "causal"
        return f"HFBackend({self.model_dir!r}, {kind}, batch_size={self.batch_size}, device={str(self.device)!r})"

    def _encode(self, texts: Sequence[str]):
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_input_tokens,
                             return_tensors="pt", return_token_type_ids=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def generate(self, instructions: Sequence[str],
                 recipe: Sequence[DecodingMode] = REFERENCE_RECIPE) -> list[list[tuple[str, str]]]:
        """Per instruction, `responses_per_instruction(recipe)` (mode, text) pairs, all of them kept."""
        import torch

        out: list[list[tuple[str, str]]] = [[] for _ in instructions]
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        for idx in _batches(len(instructions), self.batch_size):
            batch_texts = [instructions[i] for i in idx]
            enc = None
            for m, mode in enumerate(recipe):
                described = {**self._described, "prompts": batch_texts, "mode_index": m,
                             "mode": {"name": mode.name, "num_return": mode.num_return, "kwargs": dict(mode.kwargs)}}
                key = ResponseCache.key(described)
                texts = self.cache.get(key) if self.cache else None
                if texts is None:
                    if enc is None:
                        enc = self._encode(batch_texts)
                    with torch.random.fork_rng(devices=devices), torch.inference_mode():
                        torch.manual_seed(_derive_seed(self.seed, batch_texts, m))
                        seqs = self.model.generate(**enc, **dict(mode.kwargs), num_return_sequences=mode.num_return,
                                                   pad_token_id=self.tokenizer.pad_token_id)
                    if not self.is_seq2seq:
                        seqs = seqs[:, enc["input_ids"].shape[1]:]
                    texts = self.tokenizer.batch_decode(seqs, skip_special_tokens=True)
                    if self.cache:
                        self.cache.put(key, described, texts)
                for k, i in enumerate(idx):
                    out[i].extend((mode.name, t.strip())
                                  for t in texts[k * mode.num_return:(k + 1) * mode.num_return])
        return out

    def log_likelihood(self, instructions: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """log p(response | instruction): (sum over response tokens, mean per token), float64 [N] each.

        Seq2seq: the response is tokenized as a target (the tokenizer's own special
        tokens, e.g. T5's closing </s>, are scored). Causal: prompt ids (truncated to
        `max_input_tokens`) followed by the response's ids without special tokens plus
        EOS, so both families score "this response, then stop".
        """
        import torch

        if len(instructions) != len(responses):
            raise ValueError(f"{len(instructions)} instructions for {len(responses)} responses")
        sums = np.zeros(len(instructions), np.float64)
        counts = np.zeros(len(instructions), np.int64)
        for idx in _batches(len(instructions), self.batch_size):
            insts = [instructions[i] for i in idx]
            resps = [responses[i] for i in idx]
            with torch.inference_mode():
                if self.is_seq2seq:
                    token_lp, mask = self._seq2seq_token_logprobs(insts, resps)
                else:
                    token_lp, mask = self._causal_token_logprobs(insts, resps)
            sums[idx.start:idx.stop] = (token_lp.double() * mask.double()).sum(-1).cpu().numpy()
            counts[idx.start:idx.stop] = mask.sum(-1).cpu().numpy()
        if (counts == 0).any():
            raise ValueError("a response has no tokens to score (empty response and no EOS token)")
        return sums, sums / counts

    def _seq2seq_token_logprobs(self, insts: Sequence[str], resps: Sequence[str]):
        import torch

        enc = self._encode(insts)
        tgt = self.tokenizer(text_target=list(resps), padding=True, return_tensors="pt",
                             return_token_type_ids=False)
        labels = tgt["input_ids"].to(self.device)
        mask = tgt["attention_mask"].to(self.device)
        # The model shifts labels right itself; padding positions are masked out of the sums.
        logits = self.model(**enc, labels=labels.masked_fill(mask == 0, -100)).logits.float()
        token_lp = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return token_lp, mask.float()

    def _causal_token_logprobs(self, insts: Sequence[str], resps: Sequence[str]):
        import torch

        tok = self.tokenizer
        prompts = tok(list(insts), truncation=True, max_length=self.max_input_tokens,
                      return_token_type_ids=False)["input_ids"]
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        answers = [tok(r, add_special_tokens=False)["input_ids"] + eos for r in resps]
        width = max(len(p) + len(a) for p, a in zip(prompts, answers))
        ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(prompts), width), dtype=torch.long)
        score = torch.zeros((len(prompts), width), dtype=torch.float32)
        # Right padding here: positions then start at 0 for every row without relying on
        # the model deriving position ids from the attention mask.
        for r, (p, a) in enumerate(zip(prompts, answers)):
            ids[r, :len(p) + len(a)] = torch.tensor(p + a, dtype=torch.long)
            attn[r, :len(p) + len(a)] = 1
            score[r, len(p):len(p) + len(a)] = 1.0
        ids, attn, score = ids.to(self.device), attn.to(self.device), score.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=attn).logits.float()
        # Token t is predicted by the logits at t - 1, so a response token at position 0 (an empty
        # prompt) is not scored; the returned mean divides by the tokens actually scored.
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        return lp, score[:, 1:]


def _dir_fingerprint(directory: str) -> list[tuple[str, int, int]]:
    """A model directory's files by (name, size, mtime): new weights in place mean new cache keys."""
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(pathlib.Path(directory).iterdir()) if p.is_file()]


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _derive_seed(*parts: Any) -> int:
    """A 63-bit seed from JSON-able parts, stable across processes."""
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP servers.
# ------------------------------------------------------------------------------------------

class BackendError(RuntimeError):
    """A request that failed for good (retries exhausted or a non-retryable status)."""


class _Secret:
    """Holds the API key so that repr(), vars() and tracebacks show a placeholder, not the key."""

    __slots__ = ("value",)

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>" if self.value else "<unset>"


_RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))


class OpenAIBackend:
    """Samples from an OpenAI-compatible `/v1/completions` (or `/v1/chat/completions`) endpoint.

    One request per (instruction, mode) with `n = num_return`. Mode kwargs map to:
    `temperature`, `top_p`, `max_new_tokens -> max_tokens`, `seed`; with
    `server_extensions=True` (vLLM's extra sampling params, which TGI and llama.cpp
    partly share) also `top_k` (-1 = off), `min_new_tokens -> min_tokens`,
    `truncate_prompt_tokens = max_input_tokens` (vLLM keeps the LAST tokens, HF the
    first), and beam search as `use_beam_search=True, n=best_of=num_beams`, of which
    the first `num_return` choices are kept (vLLM returns beams best first, and its
    beam width is `n` in newer releases, `best_of` in older ones). Without extensions
    (e.g. a hosted API that rejects unknown params) top_k and min_tokens are not sent
    and a beam mode becomes greedy decoding (temperature 0): the recipe is then only
    approximated.

    The API key is read from `api_key_env` once (no header when unset, as local
    servers need none), sent as `Authorization: Bearer`, and never appears in logs,
    errors or repr. Requests run on at most `max_concurrency` threads; 408/409/425/429,
    5xx, timeouts and connection errors are retried `max_retries` times with
    exponential backoff and full jitter (`sleep` is injectable for tests). With
    `cache_dir`, each request's result is one JSON file named by the sha256 of
    (endpoint URL, request body: model, prompt, params, seed), written atomically, so
    a re-run never pays twice and a crash never leaves a partial file.

    `base_url` is the API root as OpenAI SDKs take it (e.g. `http://host:8000/v1`);
    a bare `http://host:8000` gets `/v1` appended.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", chat: bool = False,
                 server_extensions: bool = True, max_concurrency: int = 8, max_retries: int = 5,
                 timeout: float = 60.0, cache_dir: str | os.PathLike | None = None, seed: int = 0,
                 max_input_tokens: int = REFERENCE_MAX_INPUT_TOKENS, backoff_base: float = 1.0,
                 backoff_max: float = 60.0, sleep: Callable[[float], None] = time.sleep) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("need max_concurrency >= 1, max_retries >= 0, timeout > 0")
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        root = base_url.rstrip("/")
        if parsed.path in ("", "/"):
            root += "/v1"
        self.base_url = root
        self.url = root + ("/chat/completions" if chat else "/completions")
        self.model = model
        self.chat = chat
        self.server_extensions = server_extensions
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.seed = seed
        self.max_input_tokens = max_input_tokens
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._jitter = random.Random(seed)
        self._key = _Secret(os.environ.get(api_key_env) or None)

    def __repr__(self) -> str:
        key = "set" if self._key.value else "unset"
        return (f"OpenAIBackend({self.base_url!r}, model={self.model!r}, chat={self.chat}, "
                f"api_key_env={self.api_key_env!r} ({key}))")

    # -- requests --------------------------------------------------------------------------

    def request_body(self, instruction: str, mode: DecodingMode) -> dict[str, Any]:
        """The JSON body for one (instruction, mode): the mapping documented on the class."""
        kw = mode.kwargs
        body: dict[str, Any] = {"model": self.model, "seed": self.seed}
        if self.chat:
            body["messages"] = [{"role": "user", "content": instruction}]
        else:
            body["prompt"] = instruction
        if "max_new_tokens" in kw:
            body["max_tokens"] = int(kw["max_new_tokens"])
        ext = self.server_extensions
        if ext:
            if "min_new_tokens" in kw:
                body["min_tokens"] = int(kw["min_new_tokens"])
            if self.max_input_tokens:
                body["truncate_prompt_tokens"] = int(self.max_input_tokens)
        if kw.get("do_sample", False):
            body["n"] = mode.num_return
            body["temperature"] = float(kw.get("temperature", 1.0))
            body["top_p"] = float(kw.get("top_p", 1.0))
            if ext:
                top_k = int(kw.get("top_k") or 0)
                body["top_k"] = top_k if top_k > 0 else -1
        elif mode.is_beam and ext:
            beams = max(int(kw["num_beams"]), mode.num_return)
            body.update(use_beam_search=True, n=beams, best_of=beams, temperature=0.0)
        else:
            body.update(n=mode.num_return, temperature=0.0)
        return body

    def generate(self, instructions: Sequence[str],
                 recipe: Sequence[DecodingMode] = REFERENCE_RECIPE) -> list[list[tuple[str, str]]]:
        """Per instruction, the recipe's (mode, text) pairs; identical requests are sent once."""
        jobs: dict[str, dict[str, Any]] = {}  # cache key -> body
        plan: list[list[tuple[DecodingMode, str]]] = []
        for inst in instructions:
            row = []
            for mode in recipe:
                body = self.request_body(inst, mode)
                key = self.cache_key(body)
                jobs.setdefault(key, body)
                row.append((mode, key))
            plan.append(row)
        results: dict[str, list[str]] = {}
        todo = []
        for key, body in jobs.items():
            cached = self.cache.get(key) if self.cache else None
            if cached is None:
                todo.append(key)
            else:
                results[key] = cached
        if todo:
            self._fetch_all(todo, jobs, results)
        out = []
        for row in plan:
            pairs: list[tuple[str, str]] = []
            for mode, key in row:
                pairs.extend((mode.name, t) for t in results[key][:mode.num_return])
            out.append(pairs)
        return out

    def _fetch_all(self, todo: Sequence[str], jobs: Mapping[str, Mapping[str, Any]],
                   results: dict[str, list[str]]) -> None:
        """Fetch `todo` concurrently, caching each success as it lands; the first failure cancels
        the requests not started yet and is raised once the running ones finish (and are cached)."""
        errors: list[BaseException] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo))) as pool:
            futures = {pool.submit(self._fetch, jobs[key]): key for key in todo}
            for fut in concurrent.futures.as_completed(futures):
                key = futures[fut]
                try:
                    texts = fut.result()
                except concurrent.futures.CancelledError:
                    continue
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    if not errors:
                        for other in futures:
                            other.cancel()
                    errors.append(e)
                    continue
                if self.cache:
                    self.cache.put(key, {"url": self.url, "body": jobs[key]}, texts)
                results[key] = texts
        if errors:
            raise errors[0]

    def cache_key(self, body: Mapping[str, Any]) -> str:
        """sha256 of the endpoint URL and the request body (never the key)."""
        return ResponseCache.key({"url": self.url, "body": body})

    def _fetch(self, body: Mapping[str, Any]) -> list[str]:
        """POST with retries; the texts of the choices in index order."""
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key.value:
            headers["Authorization"] = f"Bearer {self._key.value}"
        last = "no attempt"
        retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self._backoff(attempt, retry_after)
                logger.warning("POST %s: %s; retry %d/%d in %.2fs", self.url, last, attempt, self.max_retries, delay)
                self._sleep(delay)
            retry_after = None
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    payload = resp.read()
            except urllib.error.HTTPError as e:
                try:
                    detail = self._mask(e.read()[:300].decode("utf-8", "replace"))
                except (OSError, http.client.HTTPException):
                    detail = ""
                e.close()
                last = f"status {e.code} {detail!r}"
                if e.code not in _RETRY_STATUS:
                    raise BackendError(f"POST {self.url} failed with {last} (not retried)") from None
                retry_after = _parse_retry_after(e.headers.get("Retry-After") if e.headers else None)
                continue
            except (OSError, http.client.HTTPException) as e:  # timeouts, refused/reset connections
                reason = getattr(e, "reason", e)
                last = "timeout" if isinstance(reason, TimeoutError) else self._mask(f"{type(reason).__name__}: {reason}")
                continue
            return self._parse(payload)
        raise BackendError(f"POST {self.url} failed after {self.max_retries + 1} attempts; last: {last}")

    def _parse(self, payload: bytes) -> list[str]:
        try:
            choices = sorted(json.loads(payload)["choices"], key=lambda c: c.get("index", 0))
            if self.chat:
                return [c["message"]["content"] or "" for c in choices]
            return [c["text"] for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            snippet = self._mask(payload[:200].decode("utf-8", "replace"))
            raise BackendError(f"POST {self.url}: unexpected response ({type(e).__name__}): {snippet!r}") from None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter on base * 2^(attempt-1), capped; a server's Retry-After is a floor."""
        cap = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        delay = self._jitter.uniform(0.0, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _mask(self, text: str) -> str:
        key = self._key.value
        return text.replace(key, "***") if key else text

def _parse_retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: ignore, the backoff applies


# ------------------------------------------------------------------------------------------

_BACKENDS: Mapping[str, type] = types.MappingProxyType({"none": NullBackend, "hf": HFBackend, "openai": OpenAIBackend})


def make_backend(config: Mapping[str, Any]) -> Backend:
    """A backend from a plain dict: `{"name": "none" | "hf" | "openai", **constructor kwargs}`."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in _BACKENDS:
        raise ValueError(f"unknown LLM backend {name!r}; expected one of {sorted(_BACKENDS)}")
    cls = _BACKENDS[name]
    try:
        inspect.signature(cls).bind(**config)
    except TypeError as e:
        raise ValueError(f"bad arguments for the {name!r} backend: {e}") from None
    return cls(**config)


RECIPES: Mapping[str, tuple[DecodingMode, ...]] = types.MappingProxyType({"reference": REFERENCE_RECIPE})
# What each backend cannot run without, and the CLI shorthand that sets it.
_REQUIRED = {"hf": {"model_dir": "--llm_model (a transformers model directory)"},
             "openai": {"base_url": "--llm_base_url (e.g. http://host:8000/v1)",
                        "model": "--llm_model (the served model's name)"}}


def recipe_named(name: str) -> tuple[DecodingMode, ...]:
    """The decoding recipe a config's `llm.recipe` names."""
    if name not in RECIPES:
        raise ValueError(f"unknown decoding recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


def backend_kwargs(llm_config: Mapping[str, Any], *, allow_none: bool = False) -> tuple[str, dict[str, Any]]:
    """The backend name and constructor arguments a config's `llm` block describes ("" means None).

    The block is `configs/data/common.py:llm()`. Checked cheaply, so a missing model fails before
    anything loads; `allow_none` accepts "none" (the data build's default: no LLM samples).
    """
    name = llm_config["name"]
    if name == "none" and allow_none:
        return name, {}
    if name not in _REQUIRED:
        raise ValueError(f"this needs an LLM to sample from, got backend {name!r}: pass --llm hf --llm_model DIR "
                         f"or --llm openai --llm_base_url URL --llm_model NAME (config.llm.*)")
    kwargs = {k: (None if v == "" else v) for k, v in dict(llm_config[name]).items()}
    missing = [flag for key, flag in _REQUIRED[name].items() if not kwargs.get(key)]
    if missing:
        raise ValueError(f"the {name} backend needs " + " and ".join(missing))
    return name, kwargs


def backend_from_config(llm_config: Mapping[str, Any], *, allow_none: bool = False) -> Backend:
    """The backend a config's `llm` block describes (see `backend_kwargs`)."""
    name, kwargs = backend_kwargs(llm_config, allow_none=allow_none)
    return make_backend({"name": name, **kwargs})

