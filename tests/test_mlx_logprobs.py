"""The MLX backend's mean token log-probability (Task `logprobs`) on a real tiny MLX model,
checked against a plain forward pass of that model, log-softmaxed here in float64."""

from __future__ import annotations

import threading

import pytest

try:
    import mlx.core as mx
    import mlx_lm  # noqa: F401
except ImportError as e:  # the test extra installs mlx[cpu] on Linux and mlx-lm on Linux and macOS
    pytest.skip(f"mlx cannot be imported here ({e}); install the test extra: "
                "pip install -e '.[test]'", allow_module_level=True)

import numpy as np

from common.bodies import MIN_LOGPROB, Sampling, Task
from tests.mlx_tiny import build_tiny_model
from worker.mlx_backend import MlxBackend

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return MlxBackend(build_tiny_model(tmp_path_factory.mktemp("mlx") / "tiny-llama", seed=0))


def generate(backend, sampling: Sampling, seed: int = 1):
    pieces: list[str] = []
    outcome = backend.generate(Task("j1", 0, seed, sampling), pieces.append, threading.Event())
    assert outcome.error is None and "".join(pieces) == outcome.text
    return outcome, pieces


def reference_logprobs(backend, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """The model's own greedy tokens after `prompt` and each one's log-probability, from a
    plain forward pass over the whole sequence, log-softmaxed here in float64."""
    tokens = list(prompt)
    for _ in range(n):
        logits = backend.llm(mx.array([tokens]))[0, -1]
        tokens.append(int(mx.argmax(logits).item()))
    rows = np.array(backend.llm(mx.array([tokens]))[0].astype(mx.float32), dtype=np.float64)
    rows = rows[len(prompt) - 1:-1]
    top = rows.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
    made = tokens[len(prompt):]
    return made, [rows[i, t] - lse[i] for i, t in enumerate(made)]


def test_logprob_is_reported_only_when_asked(tiny):
    plain = generate(tiny, Sampling(prompt=PROMPT, max_tokens=8, temperature=1.0), seed=2)[0]
    asked = generate(tiny, Sampling(prompt=PROMPT, max_tokens=8, temperature=1.0,
                                    logprobs=True), seed=2)[0]
    assert plain.logprob is None and "logprob" not in plain.to_map()
    assert asked.text == plain.text
    assert isinstance(asked.logprob, float) and MIN_LOGPROB < asked.logprob <= 0


def test_the_greedy_mean_equals_an_independent_reckoning(tiny):
    # Given the tiny model's greedy tokens and their log-probabilities from a forward pass
    tokens, expected = reference_logprobs(tiny, tiny.tokenizer.encode(PROMPT), 12)
    # When the backend writes them at temperature 0, asked for its logprob
    outcome, _ = generate(tiny, Sampling(prompt=PROMPT, max_tokens=12, temperature=0,
                                         logprobs=True))
    # Then it is their mean
    assert outcome.text == tiny.tokenizer.decode(tokens)
    assert outcome.logprob == pytest.approx(float(np.mean(expected)), abs=1e-3)


def test_a_stop_string_counts_the_tokens_up_to_the_one_that_completed_it(tiny):
    tokens, expected = reference_logprobs(tiny, tiny.tokenizer.encode(PROMPT), 12)
    full = tiny.tokenizer.decode(tokens)
    # a stop of the last character of the 2nd token and the first of the 3rd
    cut = len(tiny.tokenizer.decode(tokens[:2]))
    stop = full[cut - 1:cut + 1]
    assert len(stop) == 2 and stop.isprintable() and stop not in full[:cut]
    made = next(k for k in range(1, len(tokens) + 1) if stop in tiny.tokenizer.decode(tokens[:k]))
    outcome, _ = generate(tiny, Sampling(prompt=PROMPT, max_tokens=12, temperature=0,
                                         stop=(stop,), logprobs=True))
    assert outcome.finish_reason == "stop" and outcome.text == full[:full.index(stop)]
    assert outcome.logprob == pytest.approx(float(np.mean(expected[:made])), abs=1e-3)


def test_a_candidate_cancelled_before_any_token_reports_none(tiny):
    asked = Sampling(prompt=PROMPT, max_tokens=8, temperature=0, logprobs=True)
    cancelled = threading.Event()
    cancelled.set()
    none = tiny.generate(Task("j1", 0, 1, asked), lambda _: None, cancelled)
    assert none.finish_reason == "cancelled" and none.logprob is None
    assert generate(tiny, asked)[0].logprob is not None
