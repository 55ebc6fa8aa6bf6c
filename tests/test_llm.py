"""LLM backends: tiny random HF models (seq2seq, causal) and a local OpenAI-compatible server."""

from __future__ import annotations

import logging
import math
from collections import Counter

import fakes
import numpy as np
import pytest

from cappy_jax.data.llm import (REFERENCE_RECIPE, BackendError, DecodingMode, HFBackend, NullBackend, OpenAIBackend,
                                make_backend, responses_per_instruction)

RECIPE_COUNTS = {"beam": 1, "sample": 4, "temperature": 4, "top_k": 4, "top_p": 4}


# ------------------------------------------------------------------------------------------
# Tiny HF models, built offline (tests/fakes.py).
# ------------------------------------------------------------------------------------------



INSTRUCTIONS = ["the cat sat on the mat", "why", "who ran to the big red tree because of the dog"]
RESPONSES = ["a dog", "yes", "the bird flew to the blue tree"]


def _check_generation(out: list[list[tuple[str, str]]]) -> None:
    assert len(out) == len(INSTRUCTIONS)
    for pairs in out:
        assert len(pairs) == 17 == responses_per_instruction(REFERENCE_RECIPE)
        assert Counter(m for m, _ in pairs) == RECIPE_COUNTS
        assert [m for m, _ in pairs] == [m.name for m in REFERENCE_RECIPE for _ in range(m.num_return)]
        assert all(isinstance(t, str) and len(t.split()) <= 64 for _, t in pairs)


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_hf_generate_reference_recipe(family, seq2seq_dir, causal_dir) -> None:
    import torch

    model_dir = seq2seq_dir if family == "seq2seq" else causal_dir
    backend = make_backend({"name": "hf", "model_dir": model_dir, "batch_size": 2, "seed": 0})
    assert backend.is_seq2seq == (family == "seq2seq")
    before = torch.random.get_rng_state()
    out = backend.generate(INSTRUCTIONS)
    assert torch.equal(before, torch.random.get_rng_state())  # the global torch RNG is left alone
    _check_generation(out)
    samples = [t for pairs in out for m, t in pairs if m != "beam"]
    assert len(set(samples)) > len(samples) // 2  # sampling really samples


def test_hf_causal_strips_prompt_and_left_pads(causal_dir) -> None:
    greedy = [DecodingMode("greedy", 1, {"do_sample": False, "min_new_tokens": 5, "max_new_tokens": 5})]
    batched = HFBackend(causal_dir, batch_size=3).generate(INSTRUCTIONS, greedy)
    single = HFBackend(causal_dir, batch_size=1).generate(INSTRUCTIONS, greedy)
    assert batched == single  # left padding does not change what a prompt continues with
    for (mode, text), inst in zip((p[0] for p in batched), INSTRUCTIONS):
        assert mode == "greedy" and len(text.split()) <= 5 < len(INSTRUCTIONS[0].split())


def test_hf_generate_seeded(seq2seq_dir) -> None:
    recipe = [DecodingMode("sample", 4, {"do_sample": True, "top_k": 0, "max_new_tokens": 8})]
    a = HFBackend(seq2seq_dir, seed=1).generate(INSTRUCTIONS[:2], recipe)
    b = HFBackend(seq2seq_dir, seed=1).generate(INSTRUCTIONS[:2], recipe)
    c = HFBackend(seq2seq_dir, seed=2).generate(INSTRUCTIONS[:2], recipe)
    assert a == b and a != c


def test_hf_cache_answers_a_rerun_and_only_that(seq2seq_dir, tmp_path, monkeypatch) -> None:
    # A data build samples for hours; with a cache, a re-run after a crash asks the model only for the batches
    # not yet answered, and anything the samples depend on (here the seed) makes new keys.
    recipe = [DecodingMode("sample", 2, {"do_sample": True, "top_k": 0, "max_new_tokens": 8}),
              DecodingMode("greedy", 1, {"do_sample": False, "max_new_tokens": 4})]
    cache = tmp_path / "cache"
    first = HFBackend(seq2seq_dir, batch_size=2, seed=1, cache_dir=cache).generate(INSTRUCTIONS[:2], recipe)
    assert first == HFBackend(seq2seq_dir, batch_size=2, seed=1).generate(INSTRUCTIONS[:2], recipe)
    files = [f for f in cache.rglob("*") if f.is_file()]
    assert len(files) == 2 and not [f for f in files if f.name.startswith(".tmp")]  # one batch, two modes

    again = HFBackend(seq2seq_dir, batch_size=2, seed=1, cache_dir=cache)
    asked: list[int] = []
    real = again.model.generate
    monkeypatch.setattr(again.model, "generate", lambda **kw: asked.append(len(kw["input_ids"])) or real(**kw))
    assert again.generate(INSTRUCTIONS[:2], recipe) == first and asked == []
    assert again.generate(INSTRUCTIONS, recipe)[:2] == first and asked == [1, 1]  # the new batch: one prompt
    other_seed = HFBackend(seq2seq_dir, batch_size=2, seed=2, cache_dir=cache)
    assert other_seed.generate(INSTRUCTIONS[:2], recipe) != first
    assert len([f for f in cache.rglob("*") if f.is_file()]) == 2 + 2 + 2


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_hf_log_likelihood(family, seq2seq_dir, causal_dir) -> None:
    import torch

    model_dir = seq2seq_dir if family == "seq2seq" else causal_dir
    backend = HFBackend(model_dir, batch_size=2)
    sums, means = backend.log_likelihood(INSTRUCTIONS, RESPONSES)
    assert sums.shape == means.shape == (3,) and sums.dtype == np.float64
    assert np.isfinite(sums).all() and (sums < 0).all()
    tok = backend.tokenizer
    if family == "seq2seq":  # the target's own special tokens (the closing </s>) are scored
        counts = [len(tok(text_target=r)["input_ids"]) for r in RESPONSES]
    else:  # response tokens plus EOS
        counts = [len(tok(r, add_special_tokens=False)["input_ids"]) + 1 for r in RESPONSES]
    np.testing.assert_allclose(sums, means * np.array(counts), rtol=1e-12)
    # Padding-invariant: one pair at a time gives the same numbers.
    one = HFBackend(model_dir, batch_size=1).log_likelihood(INSTRUCTIONS, RESPONSES)
    np.testing.assert_allclose(one[0], sums, rtol=1e-5)
    # Independent check against the model's own mean cross-entropy for a single pair.
    inst, resp = INSTRUCTIONS[0], RESPONSES[0]
    with torch.no_grad():
        if family == "seq2seq":
            enc = tok([inst], return_tensors="pt", return_token_type_ids=False)
            labels = tok(text_target=[resp], return_tensors="pt")["input_ids"]
            loss = backend.model(**enc, labels=labels).loss.item()
        else:
            p = tok(inst)["input_ids"]
            a = tok(resp, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = torch.tensor([p + a])
            labels = torch.tensor([[-100] * len(p) + a])
            loss = backend.model(input_ids=ids, labels=labels).loss.item()
    assert math.isclose(-means[0], loss, rel_tol=1e-4)
    with pytest.raises(ValueError):
        backend.log_likelihood(INSTRUCTIONS, RESPONSES[:1])


# ------------------------------------------------------------------------------------------
# A local OpenAI-compatible server.
# ------------------------------------------------------------------------------------------

KEY = "sk-test-SECRET-4f9a1c"


@pytest.fixture
def server():
    with fakes.serving() as srv:
        yield srv


@pytest.fixture
def key_env(monkeypatch) -> str:
    monkeypatch.setenv("CAPPY_TEST_KEY", KEY)
    return "CAPPY_TEST_KEY"


@pytest.fixture
def llm_log(caplog):
    """Records of our logger even if some other test turned off propagation on 'cappy_jax'."""
    log = logging.getLogger("cappy_jax.data.llm")
    log.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="cappy_jax.data.llm")
    yield caplog
    log.removeHandler(caplog.handler)


def _backend(server, key_env, **kw) -> OpenAIBackend:
    sleeps = kw.pop("sleeps", [])
    return OpenAIBackend(server.url, "tiny-model", api_key_env=key_env, sleep=sleeps.append, **kw)


def test_openai_request_params_and_key(server, key_env) -> None:
    out = _backend(server, key_env).generate(["hello", "world"])
    assert len(server.hits) == 2 * 5
    assert {h["path"] for h in server.hits} == {"/v1/completions"}
    assert {h["auth"] for h in server.hits} == {f"Bearer {KEY}"}
    for pairs, prompt in zip(out, ["hello", "world"]):
        assert len(pairs) == 17 and Counter(m for m, _ in pairs) == RECIPE_COUNTS
        assert pairs[0] == ("beam", f"{prompt}|t=0.0|0")  # first (best) beam only
        assert pairs[1:5] == [("sample", f"{prompt}|t=1.0|{i}") for i in range(4)]  # index order
    by_mode = {}
    for body in server.bodies():
        assert body["model"] == "tiny-model" and body["seed"] == 0
        assert body["max_tokens"] == 64 and body["min_tokens"] == 3 and body["truncate_prompt_tokens"] == 512
        if body["prompt"] == "hello":
            key = ("beam" if body.get("use_beam_search") else
                   "top_k" if body["top_k"] == 40 else "top_p" if body["top_p"] == 0.95 else
                   "temperature" if body["temperature"] == 0.9 else "sample")
            by_mode[key] = body
    assert set(by_mode) == set(RECIPE_COUNTS)
    assert by_mode["beam"]["n"] == by_mode["beam"]["best_of"] == 4 and by_mode["beam"]["temperature"] == 0.0
    assert (by_mode["sample"]["n"], by_mode["sample"]["temperature"], by_mode["sample"]["top_k"],
            by_mode["sample"]["top_p"]) == (4, 1.0, -1, 1.0)
    assert by_mode["temperature"]["temperature"] == 0.9 and by_mode["temperature"]["top_k"] == -1
    assert by_mode["top_k"]["top_k"] == 40 and by_mode["top_p"]["top_p"] == 0.95


def test_openai_plain_params_and_chat(server, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_ENV", raising=False)
    plain = OpenAIBackend(server.url + "/v1", "m", api_key_env="NO_SUCH_KEY_ENV", server_extensions=False)
    beam = plain.request_body("q", REFERENCE_RECIPE[0])
    assert beam == {"model": "m", "seed": 0, "prompt": "q", "max_tokens": 64, "n": 1, "temperature": 0.0}
    top_k = plain.request_body("q", REFERENCE_RECIPE[3])
    assert "top_k" not in top_k and "min_tokens" not in top_k and top_k["n"] == 4
    chat = OpenAIBackend(server.url, "m", api_key_env="NO_SUCH_KEY_ENV", chat=True)
    out = chat.generate(["hi"], [DecodingMode("sample", 2, {"do_sample": True})])
    assert out == [[("sample", "hi|0"), ("sample", "hi|1")]]
    assert server.hits[-1]["path"] == "/v1/chat/completions" and server.hits[-1]["auth"] is None
    assert server.hits[-1]["body"]["messages"] == [{"role": "user", "content": "hi"}]


def test_openai_retries_then_succeeds(server, key_env, llm_log) -> None:
    server.script = [("status", 500), ("status", 503), ("status", 429, {"Retry-After": "7"})]
    sleeps: list[float] = []
    backend = _backend(server, key_env, sleeps=sleeps, backoff_base=0.5, backoff_max=10.0)
    out = backend.generate(["q"], REFERENCE_RECIPE[:1])
    assert out == [[("beam", "q|t=0.0|0")]] and len(server.hits) == 4
    assert len(sleeps) == 3
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0 and sleeps[2] == 7.0  # Retry-After is a floor
    assert "status 500" in llm_log.text and "status 429" in llm_log.text


def test_openai_non_retryable_status(server, key_env) -> None:
    server.script = [("status", 400)]
    with pytest.raises(BackendError, match="400.*not retried"):
        _backend(server, key_env).generate(["q"], REFERENCE_RECIPE[:1])
    assert len(server.hits) == 1


def test_openai_timeout_retried_then_clear_error(server, key_env) -> None:
    server.script = [("sleep", 1.5)] * 2
    sleeps: list[float] = []
    backend = _backend(server, key_env, sleeps=sleeps, timeout=0.25, max_retries=1)
    with pytest.raises(BackendError) as err:
        backend.generate(["q"], REFERENCE_RECIPE[:1])
    msg = str(err.value)
    assert f"{server.url}/v1/completions" in msg and "2 attempts" in msg and "timeout" in msg
    assert len(server.hits) == 2 and len(sleeps) == 1


def test_openai_cache_prevents_second_request(server, key_env, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = _backend(server, key_env, cache_dir=cache).generate(["hello", "world", "hello"])
    assert len(server.hits) == 2 * 5  # the repeated instruction is sent once
    again = _backend(server, key_env, cache_dir=cache).generate(["world", "hello"])
    assert len(server.hits) == 10 and again == first[1:]
    files = sorted(cache.rglob("*"))
    assert len([f for f in files if f.is_file()]) == 10
    assert not [f for f in files if f.name.startswith(".tmp")]
    for f in files:
        if f.is_file():
            assert KEY not in f.read_text()
    _backend(server, key_env, cache_dir=cache, seed=1).generate(["hello"])  # another seed: a new request
    assert len(server.hits) == 15


def test_openai_failure_caches_finished_requests(server, key_env, tmp_path) -> None:
    server.script = [("status", 401)]
    backend = _backend(server, key_env, cache_dir=tmp_path, max_concurrency=1)
    with pytest.raises(BackendError):
        backend.generate(["a", "b"], REFERENCE_RECIPE[:1])
    hits = len(server.hits)
    backend.generate(["a", "b"], REFERENCE_RECIPE[:1])
    assert len(server.hits) - hits == 2 - (hits - 1)  # only what failed or never ran is fetched again


def test_openai_bounded_concurrency(server, key_env) -> None:
    server.script = [("delay", 0.05)] * 10
    _backend(server, key_env, max_concurrency=2).generate(["a", "b"])
    assert len(server.hits) == 10 and server.max_in_flight <= 2


def test_openai_key_never_leaks(server, key_env, llm_log) -> None:
    server.script = [("echo", 500), ("echo", 502), ("echo", 503)]
    backend = _backend(server, key_env, max_retries=2)
    with pytest.raises(BackendError) as err:
        backend.generate(["q"], REFERENCE_RECIPE[:1])
    assert server.hits[0]["auth"] == f"Bearer {KEY}"  # it was sent ...
    assert "***" in str(err.value)  # ... the server echoed it, and it was masked
    for text in (str(err.value), repr(err.value), llm_log.text, repr(backend), repr(vars(backend))):
        assert KEY not in text
    assert llm_log.records  # the retries were logged


def test_make_backend_and_recipe() -> None:
    assert isinstance(make_backend({"name": "none"}), NullBackend)
    assert make_backend({"name": "none"}).generate(["a", "b"]) == [[], []]
    ob = make_backend({"name": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    assert isinstance(ob, OpenAIBackend) and ob.url == "http://127.0.0.1:9/v1/completions"
    with pytest.raises(ValueError, match="unknown"):
        make_backend({"name": "gpt"})
    with pytest.raises(ValueError, match="bad arguments"):
        make_backend({"name": "openai", "base_url": "http://x", "model": "m", "colour": 1})
    with pytest.raises(ValueError):
        OpenAIBackend("ftp://x", "m")
    assert responses_per_instruction(REFERENCE_RECIPE) == 17
    with pytest.raises(TypeError):
        REFERENCE_RECIPE[0].kwargs["num_beams"] = 8  # shared constant: read-only
    with pytest.raises(ValueError):
        DecodingMode("x", 0)
