"""Prefix reuse on the real bundled model (worker/kv_state.py): an instance that restores
another instance's evaluated prompt, or continues from its own, writes the same greedy text
as one that evaluates the whole prompt from an empty KV."""

from __future__ import annotations

import threading

import pytest

from common.bodies import Sampling, Task
from worker.backend import LlamaCppBackend
from worker.prefix_cache import PrefixStore

pytestmark = [pytest.mark.model, pytest.mark.timeout(110)]

# about 650 tokens: longer than Gemma 3's 512-token sliding window
SYSTEM = " ".join(f"Rule {i}: answer in plain words and name file {i}.py when you use it."
                  for i in range(40))


def greedy(backend, prompt: str) -> str:
    sampling = Sampling(prompt=prompt, max_tokens=12, temperature=0.0)
    out = backend.generate(Task("j", 0, 7, sampling), lambda _: None, threading.Event())
    assert out.error is None
    return out.text


@pytest.fixture(scope="module")
def instances(model_path):
    """Two instances sharing one store, and one that never reuses anything."""
    store = PrefixStore(min_tokens=64)
    return (store, LlamaCppBackend(model_path, n_ctx=1024, prefix_store=store),
            LlamaCppBackend(model_path, n_ctx=1024, prefix_store=store),
            LlamaCppBackend(model_path, n_ctx=1024, prefix_cache=False))


def test_a_second_instance_restores_the_first_ones_prompt_and_writes_the_same_text(instances):
    # Given one instance that evaluated the prompt and published it
    store, a, b, fresh = instances
    prompt = f"{SYSTEM}\nUser: Which file holds rule 3?\nAssistant:"
    first = greedy(a, prompt)
    assert len(store.entries) == 1 and len(store.entries[0].tokens) > 512
    # When the other instance gets the same prompt (the next candidate of the job)
    second = greedy(b, prompt)
    # Then it restored the state instead of evaluating the prompt, and the text is the same
    assert b.prefix.reused == 1 and b.prefix.reused_tokens == len(store.entries[0].tokens) - 1
    assert a.prefix.reused == 0
    assert first == second == greedy(fresh, prompt)
    assert fresh.prefix.reused == 0 and len(store.entries) == 1


def test_the_next_turn_continues_from_the_last_one_and_writes_the_same_text(instances):
    store, a, b, fresh = instances
    turn1 = f"{SYSTEM}\nUser: Which file holds rule 5?\nAssistant:"
    answer = greedy(b, turn1)
    turn2 = f"{turn1}{answer}\nUser: And rule 6?\nAssistant:"
    # a has never seen turn 1: it restores b's state of it, then evaluates the new turn only
    reused = a.prefix.reused
    assert greedy(a, turn2) == greedy(fresh, turn2)
    assert a.prefix.reused == reused + 1
    # and b continues from its own KV (the prompt and its own answer)
    assert greedy(b, turn2) == greedy(fresh, turn2)
