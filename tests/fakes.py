"""Test doubles shared by test files: tiny LLMs built offline, a local OpenAI-compatible server,
scripted backends and scorers.

Plain functions and classes (no fixtures), so each test file wraps them in fixtures of the scope it
needs; `pytest.ini` puts `tests/` on the path, so `from fakes import ...` works.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import pathlib
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from cappy_jax import evaluate

LLM_WORDS = ("the a an of to in is was cat dog bird sat ran flew on mat log tree red blue green big small "
             "one two three four five yes no maybe why how what who when where answer question because").split()


# ------------------------------------------------------------------------------------------
# Tiny HF language models, built offline.
# ------------------------------------------------------------------------------------------

def llm_tokenizer(eos_template: bool):
    """A WordLevel tokenizer over LLM_WORDS: small vocab keeps the random models and sampling fast."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "</s>", "<s>", *LLM_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if eos_template:  # T5-style: every encoded sequence ends with </s>
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>",
                                   bos_token="<s>")


def make_seq2seq_lm(out: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A tiny random T5 (1 layer each side, d_model 16) with the word tokenizer, saved to `out`."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tok = llm_tokenizer(eos_template=True)
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                   num_heads=2, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)
    T5ForConditionalGeneration(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_causal_lm(out: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A tiny random GPT-2 (1 layer, 16 wide, 128 positions) with the word tokenizer, saved to `out`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = llm_tokenizer(eos_template=False)
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=3, eos_token_id=2, pad_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core box: intra-op threads cost ~50x in contention; restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------
# A local OpenAI-compatible server.
# ------------------------------------------------------------------------------------------

class FakeServer:
    """Serves /v1/completions and /v1/chat/completions; `script` holds one action per hit, then 'ok'.

    Actions: ('status', code[, headers]) an error, ('echo', code) an error whose body repeats the
    Authorization header, ('sleep', seconds) answer late, ('delay', seconds) answer after a pause.
    'ok' answers choice i of a completion with f"{prompt}|t={temperature}|{i}" and of a chat with
    f"{content}|{i}", listed in reverse index order (clients must sort by index).
    """

    def __init__(self) -> None:
        self.hits: list[dict] = []
        self.script: list[tuple] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.hits.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    action = server.script.pop(0) if server.script else ("ok",)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(action, body)
                except OSError:
                    pass  # the client gave up (timeout test)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, action, body) -> None:
                if action[0] in ("sleep", "delay"):
                    time.sleep(action[1])
                if action[0] in ("status", "echo"):
                    msg = f"error; you sent {self.headers.get('Authorization')}" if action[0] == "echo" else "error"
                    self._send(action[1], {"error": msg}, action[2] if len(action) > 2 else {})
                    return
                n = body.get("n", 1)
                if "messages" in body:
                    prompt = body["messages"][0]["content"]
                    choices = [{"index": i, "message": {"role": "assistant", "content": f"{prompt}|{i}"}}
                               for i in reversed(range(n))]
                else:
                    choices = [{"index": i, "text": f"{body['prompt']}|t={body.get('temperature')}|{i}"}
                               for i in reversed(range(n))]  # out of order: the client sorts by index
                self._send(200, {"choices": choices})

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            request_queue_size = 64  # the default 5 drops concurrent SYNs: 1 s retransmit stalls

        # Port 0: the OS picks a free port, so parallel runs never collide.
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def bodies(self) -> list[dict]:
        return [h["body"] for h in self.hits]


@contextlib.contextmanager
def serving(server: FakeServer | None = None) -> Iterator[FakeServer]:
    """Runs a FakeServer on a daemon thread for the duration of the block, then shuts it down."""
    srv = server or FakeServer()
    thread = threading.Thread(target=srv.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


# ------------------------------------------------------------------------------------------
# Scripted backends and scorers.
# ------------------------------------------------------------------------------------------

class ScriptedBackend:
    """An LLM backend whose samples are given: `responses[instruction]` -> texts, dealt out in recipe order.

    Each instruction needs exactly `responses_per_instruction(recipe)` texts. `calls` records every
    `generate` batch; `fail_on_call` makes that call (0-based) raise, to test crash safety.
    """

    def __init__(self, responses: Mapping[str, Sequence[str]], *, fail_on_call: int | None = None) -> None:
        self.responses = {k: list(v) for k, v in responses.items()}
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def generate(self, instructions: Sequence[str], recipe) -> list[list[tuple[str, str]]]:
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            self.calls.append(list(instructions))
            raise RuntimeError("scripted backend failure")
        self.calls.append(list(instructions))
        out = []
        for inst in instructions:
            texts = iter(self.responses[inst])
            out.append([(m.name, next(texts)) for m in recipe for _ in range(m.num_return)])
        return out

    def __repr__(self) -> str:
        return "ScriptedBackend()"


class FunctionScorer(evaluate.FunctionScorer):
    """`evaluate.FunctionScorer` that also records the pairs it saw in `seen`."""

    def __init__(self, fn: Callable[[str, str], float]) -> None:
        super().__init__(fn)
        self.seen: list[tuple[str, str]] = []

    def score(self, pairs, progress=None) -> np.ndarray:
        pairs = list(pairs)
        self.seen += pairs
        return super().score(pairs, progress=progress)


# A PromptSource templates.yaml of ANLI (held out in T0): one original-task template with choices, one
# open-ended template that neither the choice suite nor T0's held-out evaluation uses.
ANLI_YAML = textwrap.dedent("""\
    dataset: anli
    templates:
      anli-gpt3: !Template
        answer_choices: True ||| Neither ||| False
        id: anli-gpt3
        jinja: '{{premise}} Question: {{hypothesis}} True, False, or Neither? ||| {{ answer_choices[label] }}'
        metadata: !TemplateMetadata
          original_task: true
        name: GPT-3 style
        reference: ''
      anli-open: !Template
        id: anli-open
        jinja: '{{premise}} ||| {{hypothesis}}'
        metadata: !TemplateMetadata
          original_task: false
        name: open
        reference: ''
    """)
