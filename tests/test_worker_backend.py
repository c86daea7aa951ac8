"""The llama.cpp backend on the real bundled model: cancel, context limits, chat labels."""

from __future__ import annotations

import re
import threading

import pytest

from common.bodies import ERROR_REQUEST, Sampling, Task
from worker.backend import LlamaCppBackend

pytestmark = pytest.mark.model

LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 150  # about 1500 tokens


@pytest.fixture(scope="module")
def big(model_path):
    return LlamaCppBackend(model_path, n_ctx=2048)


@pytest.fixture(scope="module")
def small(model_path):
    return LlamaCppBackend(model_path, n_ctx=256)


def generate(backend, sampling: Sampling, seed: int = 1, cancel_after_s: float | None = None):
    cancelled = threading.Event()
    timer = threading.Timer(cancel_after_s, cancelled.set) if cancel_after_s is not None else None
    if timer is not None:
        timer.start()
    pieces: list[str] = []
    try:
        outcome = backend.generate(Task("j1", 0, seed, sampling), pieces.append, cancelled)
    finally:
        if timer is not None:
            timer.cancel()
    return outcome, pieces


def test_cancel_cuts_a_long_prompt_evaluation_and_the_backend_serves_on(big):
    # Given a ~1500-token prompt, cancelled 0.05 s in: seconds of prompt evaluation on a CPU
    aborts = big.aborts
    outcome, pieces = generate(big, Sampling(prompt=LONG_PROMPT, max_tokens=64, temperature=0),
                               cancel_after_s=0.05)
    # Then llama.cpp's decode was aborted: a cancelled outcome, not an error, with no text
    assert outcome.error is None and outcome.finish_reason == "cancelled"
    assert big.aborts > aborts
    assert len(pieces) <= 1 and len(outcome.text) < 20
    # And the same instance answers the next prompt normally
    outcome, pieces = generate(big, Sampling(prompt="The capital of France is", max_tokens=8,
                                             temperature=0))
    assert outcome.error is None and outcome.finish_reason == "length"
    assert outcome.text.strip() and "".join(pieces) == outcome.text


def test_a_prompt_longer_than_the_context_is_the_requests_fault(small):
    outcome, pieces = generate(small, Sampling(prompt="word " * 600, max_tokens=8))
    assert outcome.error_kind == ERROR_REQUEST and not pieces
    assert re.fullmatch(r"prompt of \d+ tokens does not fit the context window of 256 tokens",
                        outcome.error)


def test_a_prompt_that_fits_but_leaves_too_little_room_ends_by_length(small):
    # ~200 prompt tokens + 200 max_tokens > 256: llama-cpp-python clamps max_tokens
    outcome, _ = generate(small, Sampling(prompt="word " * 200, max_tokens=200, temperature=0))
    assert outcome.error is None and outcome.finish_reason == "length"
    assert 0 < outcome.usage["completion_tokens"] <= 256 - outcome.usage["prompt_tokens"] + 1


@pytest.mark.parametrize("seed", [2, 4, 5, 7])
def test_chat_answers_carry_no_role_labels(big, seed):
    # these seeds made the bundled model write "\nAssistant: Name three colours." lines
    chat = ({"role": "user", "content": "Name three colours."},)
    outcome, pieces = generate(big, Sampling(messages=chat, max_tokens=48, temperature=0.8),
                               seed=seed)
    assert outcome.error is None
    for label in ("User:", "Assistant:", "Customer:", "Student:"):
        assert label not in outcome.text
    assert "".join(pieces) == outcome.text
