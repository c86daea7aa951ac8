"""Each candidate's mean token log-probability (Task `logprobs`, Outcome `logprob`).

The llama.cpp backend on the real bundled model, checked against an independent reckoning:
a second llama.cpp instance loaded with `logits_all`, whose logits for every position
llama-cpp-python keeps in `scores`, log-softmaxed here in float64.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from common.bodies import MIN_LOGPROB, Outcome, Sampling, Task
from common.codec import pack, unpack
from common.messages import Ready, WorkerRequest
from tests.conftest import run
from tests.test_worker_session import next_msg, session
from worker.backend import LlamaCppBackend, _extra_buffers
from worker.cpu_probe import extra_buffers_work
from worker.logprobs import MeanLogprob, TokenLog, token_logprob

PROMPT = "The capital of France is"
TOLERANCE = 1e-3


def test_token_logprob_is_a_stable_log_softmax():
    # Given scores far from zero, where a naive exp overflows float32
    logits = np.array([1e4, 1e4 - 1.0, 1e4 - 50.0, -np.inf], dtype=np.float32)
    # Then each entry is the float64 log-softmax, and a masked (-inf) token is -inf
    expected = [0.0 - math.log(1 + math.exp(-1) + math.exp(-50)),
                -1.0 - math.log(1 + math.exp(-1) + math.exp(-50))]
    assert token_logprob(logits, 0) == pytest.approx(expected[0], abs=1e-6)
    assert token_logprob(logits, 1, np.empty(4, np.float32)) == pytest.approx(expected[1], abs=1e-6)
    assert token_logprob(logits, 3) == -math.inf


def test_the_mean_is_none_without_tokens_and_kept_within_the_wire_range():
    meter = MeanLogprob()
    assert meter.mean() is None
    meter.add(-0.5)
    meter.add(-1.5)
    assert meter.mean() == -1.0
    meter.add(-math.inf)  # a token the raw model gave no chance at all
    assert meter.mean() == MIN_LOGPROB
    nan = MeanLogprob()
    nan.add_logits(np.array([np.nan, 1.0], dtype=np.float32), 1)
    assert nan.mean() is None
    rounding = MeanLogprob()
    rounding.add(1e-9)  # a certain token, a hair above 0 after float rounding
    assert rounding.mean() == 0.0


def test_a_stop_met_in_lagging_text_is_credited_to_the_token_that_completed_it():
    # Given four tokens writing "a", "b", "c", "d", whose detokenizer released "b" only
    # with the third token
    text = "abcd"
    made = TokenLog()
    for token, logprob, part in ((1, -1.0, "a"), (2, -2.0, ""), (3, -6.0, "bc"), (4, -8.0, "d")):
        made.add(token, logprob, part)

    def decode(tokens: list[int]) -> str:
        return text[:len(tokens)]

    # Then a stop "ab" counts the first two tokens, "bc" three, and no stop all four
    assert made.meter(decode, ("ab",)).mean() == -1.5
    assert made.meter(decode, ("zz", "bc")).mean() == -3.0
    assert made.meter(decode).mean() == -4.25
    assert TokenLog().meter(decode, ("ab",)).mean() is None


@pytest.fixture(scope="module")
def llm(model_path):
    return LlamaCppBackend(model_path, n_ctx=512)


@pytest.fixture(scope="module")
def reference(model_path):
    """llama.cpp keeping every position's logits (fine for a 128-token context)."""
    import llama_cpp
    with _extra_buffers(extra_buffers_work(model_path)):
        return llama_cpp.Llama(str(model_path), n_ctx=128, logits_all=True, verbose=False)


def prompt_tokens(ref, prompt: str = PROMPT) -> list[int]:
    return ref.tokenize(prompt.encode(), add_bos=True, special=True)


def greedy_tokens(ref, prompt: list[int], n: int) -> list[int]:
    ref.reset()
    ref.eval(prompt)
    out: list[int] = []
    for _ in range(n):
        out.append(int(np.argmax(ref.scores[ref.n_tokens - 1])))
        ref.eval(out[-1:])
    return out


def reference_logprobs(ref, prompt: list[int], completion: list[int]) -> list[float]:
    """log p(token | all before it) for each completion token, under the raw model. The
    completion is evaluated a token at a time, as it was generated: a batched evaluation of
    a quantized model rounds differently, by up to ~1e-2 in a mean."""
    ref.reset()
    ref.eval(prompt)
    for token in completion[:-1]:
        ref.eval([token])
    rows = ref.scores[len(prompt) - 1:len(prompt) + len(completion) - 1].astype(np.float64)
    top = rows.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
    return [rows[i, t] - lse[i] for i, t in enumerate(completion)]


def generate(backend, sampling: Sampling, seed: int = 1, cancelled: bool = False) -> Outcome:
    pieces: list[str] = []
    event = threading.Event()
    if cancelled:
        event.set()
    outcome = backend.generate(Task("j1", 0, seed, sampling), pieces.append, event)
    assert outcome.error is None, outcome.error
    assert "".join(pieces) == outcome.text
    return outcome


@pytest.mark.model
def test_logprob_is_reported_only_when_asked_and_changes_no_text(llm):
    sampling = Sampling(prompt=PROMPT, max_tokens=12, temperature=0.8)
    plain = generate(llm, sampling, seed=4)
    asked = generate(llm, Sampling(prompt=PROMPT, max_tokens=12, temperature=0.8, logprobs=True),
                     seed=4)
    assert plain.logprob is None and "logprob" not in plain.to_map()
    assert asked.text == plain.text and asked.usage == plain.usage
    assert isinstance(asked.logprob, float) and math.isfinite(asked.logprob)
    assert MIN_LOGPROB < asked.logprob <= 0
    assert Outcome.from_map(asked.to_map()).logprob == asked.logprob


@pytest.mark.model
def test_the_greedy_mean_equals_an_independent_reckoning(llm, reference):
    # Given the tokens the raw model likes best after the prompt, and each one's log-probability
    prompt = prompt_tokens(reference)
    tokens = greedy_tokens(reference, prompt, 16)
    expected = reference_logprobs(reference, prompt, tokens)
    # When the worker writes them at temperature 0, asked for its logprob
    outcome = generate(llm, Sampling(prompt=PROMPT, max_tokens=16, temperature=0, logprobs=True))
    # Then it wrote those very tokens, and reports their mean log-probability
    assert outcome.text == reference.detokenize(tokens).decode()
    assert outcome.finish_reason == "length"
    assert outcome.logprob == pytest.approx(float(np.mean(expected)), abs=TOLERANCE)


@pytest.mark.model
def test_the_mean_is_under_the_raw_distribution_whatever_the_sampling(llm, reference):
    # Given a hot, top-p-cut sample, whose tokens a temperature of 1.4 made more surprising
    outcome = generate(llm, Sampling(prompt=PROMPT, max_tokens=12, temperature=1.4, top_p=0.9,
                                     logprobs=True), seed=3)
    completion = reference.tokenize(outcome.text.encode(), add_bos=False)
    assert reference.detokenize(completion).decode() == outcome.text
    assert len(completion) == outcome.usage["completion_tokens"] == 12
    # Then its mean is that of those tokens under the model itself (temperature 1, no top-p)
    expected = reference_logprobs(reference, prompt_tokens(reference), completion)
    assert outcome.logprob == pytest.approx(float(np.mean(expected)), abs=TOLERANCE)


@pytest.mark.model
def test_a_stop_string_counts_the_tokens_up_to_the_one_that_completed_it(llm, reference):
    # Given the greedy answer " the capital of the country of France. It is ..."
    prompt = prompt_tokens(reference)
    tokens = greedy_tokens(reference, prompt, 16)
    expected = reference_logprobs(reference, prompt, tokens)
    full = reference.detokenize(tokens).decode()
    stop = "France."
    assert stop in full
    made = next(k for k in range(1, len(tokens) + 1)
                if stop in reference.detokenize(tokens[:k]).decode())
    # When the stop string cuts it
    outcome = generate(llm, Sampling(prompt=PROMPT, max_tokens=16, temperature=0,
                                     stop=(stop,), logprobs=True))
    # Then the text ends before the stop, and the mean counts every token up to the one
    # that completed it: the model made them all
    assert outcome.finish_reason == "stop" and outcome.text == full[:full.index(stop)]
    assert outcome.logprob == pytest.approx(float(np.mean(expected[:made])), abs=TOLERANCE)


@pytest.mark.model
def test_a_candidate_that_made_no_token_reports_none_and_the_next_its_own(llm):
    asked = Sampling(prompt=PROMPT, max_tokens=4, temperature=0, logprobs=True)
    none = generate(llm, asked, cancelled=True)
    assert none.finish_reason == "cancelled" and none.text == ""
    assert none.logprob is None and "logprob" not in none.to_map()
    again = generate(llm, asked)
    assert again.logprob is not None and again.logprob <= 0
    first = generate(llm, Sampling(prompt=PROMPT, max_tokens=16, temperature=0, logprobs=True))
    # the next candidate's mean is its own: nothing carried over from the one before
    assert generate(llm, asked).logprob == again.logprob != first.logprob


@pytest.mark.model
def test_chat_answers_and_forced_calls_report_one_too(llm):
    # Given a chat through the model's own template, which ends on its end-of-turn token,
    # and a call forced by a grammar (the raw model's view of the tokens it held them to)
    chat = ({"role": "user", "content": "Say hi."},)
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {}}}}
    answer = generate(llm, Sampling(messages=chat, max_tokens=48, temperature=0, logprobs=True))
    call = generate(llm, Sampling.from_map({
        "messages": list(chat), "tools": [tool], "tool_choice": "required", "max_tokens": 48,
        "temperature": 0, "logprobs": True}))
    # Then both report a finite mean at most 0
    assert answer.finish_reason == "stop"
    for outcome in (answer, call):
        assert outcome.logprob is not None and MIN_LOGPROB < outcome.logprob <= 0


@pytest.mark.model
def test_the_workers_final_carries_the_logprob_on_the_wire(ctx, llm):
    """A real session on a raw ROUTER standing in for the broker, the real model behind it."""
    def task(job: str, logprobs: bool) -> list[bytes]:
        sampling = Sampling(prompt=PROMPT, max_tokens=6, temperature=0, logprobs=logprobs)
        return WorkerRequest(b"client-1", (pack(Task(job, 0, 7, sampling).to_map()),)).to_frames()

    async def final(router, identity: bytes, frames: list[bytes]) -> dict:
        await router.send_multipart([identity, *frames])
        while True:
            _, msg = await next_msg(router, timeout_s=60.0)
            if msg.final:
                return unpack(msg.body[0])

    async def body():
        async with session(ctx, llm, liveness=1200) as (router, _):  # a silent "broker": 60 s
            identity, ready = await next_msg(router)
            assert isinstance(ready, Ready)
            return (await final(router, identity, task("asked", True)),
                    await final(router, identity, task("plain", False)))

    asked, plain = run(body(), 90.0)
    # Then the FINAL asked for it carries the mean, as the broker will decode it
    assert asked["job"] == "asked" and isinstance(asked["logprob"], float)
    assert Outcome.from_map(asked).logprob == asked["logprob"] <= 0
    assert plain["job"] == "plain" and "logprob" not in plain
