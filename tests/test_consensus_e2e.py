"""Issue 8 on the real path: the bundled model in real worker processes, a real broker.

Early quorum cancels what can no longer change the vote; the judge is a real worker reading
the real candidates; confidence reads the workers' own log-probabilities.
"""

from __future__ import annotations

import pytest

from client.client import SwarmClient
from common.bodies import GenerateRequest, Sampling
from tests.conftest import free_port, run, wait_for_peers
from tests.test_e2e import swarm  # noqa: F401 (the fixture)

pytestmark = pytest.mark.model


@pytest.fixture
def solo(procs, model_path):
    port = free_port()
    procs.broker(port, "--timeout-s", "300")
    procs.worker(port, "solo", "--model", str(model_path))
    wait_for_peers(port, {"solo"})
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture
def pair(swarm):
    """test_e2e's broker with two one-slot workers, w1 and w2."""
    return f"tcp://127.0.0.1:{swarm}"


def generate(broker: str, question: str, **kw) -> dict:
    sampling = Sampling(messages=({"role": "user", "content": question},),
                        max_tokens=kw.pop("max_tokens", 12), temperature=kw.pop("temperature", 0.0))
    request = GenerateRequest(sampling, timeout_s=300.0, stream="winner", **kw)
    return run(SwarmClient(broker).generate(request, 300.0), 280.0)


def test_early_quorum_cancels_the_candidates_that_cannot_change_the_vote(solo):
    # one slot, greedy decoding: the same answer three times, and the other two never run
    out = generate(solo, "What is the capital of France?", candidates=5, strategy="majority")
    states = [c["state"] for c in out["candidates"]]
    assert states == ["done", "done", "done", "cancelled", "cancelled"]
    assert out["vote"]["cancelled"] == 2 and out["vote"]["saved_s"] > 0
    assert out["vote"]["reason"].startswith("3 of 3 answers say")
    assert [c["agreed"] for c in out["candidates"][:3]] == [[1, 2], [0, 2], [0, 1]]


def test_without_quorum_every_candidate_runs(solo):
    out = generate(solo, "What is the capital of France?", candidates=4, strategy="majority",
                   quorum=False)
    assert [c["state"] for c in out["candidates"]] == ["done"] * 4
    assert out["vote"]["cancelled"] == 0


def test_a_real_worker_judges_real_candidates(pair):
    out = generate(pair, "Name one fruit.", candidates=3, strategy="judge", temperature=1.5,
                   seed=7, max_tokens=8)
    texts = [c["text"] for c in out["candidates"]]
    assert len(set(texts)) >= 2, texts  # different answers: there is something to judge
    judge = out["vote"]["judge"]
    assert judge["peer"] in ("w1", "w2") and judge["state"] == "done"
    # whatever the tiny model replied, the verdict is the judge's pick or says why not
    assert out["vote"]["method"] in ("judge", "similarity")
    if out["vote"]["method"] == "similarity":
        assert "named no answer" in out["vote"]["reason"]
    assert out["winner"]["text"] in texts


def test_spread_and_greedy_reach_the_workers(pair):
    # candidate 0 greedy, the rest spread: the greedy one says what a greedy decode says
    greedy = generate(pair, "What is the capital of France?", candidates=1, strategy="majority")
    out = generate(pair, "What is the capital of France?", candidates=3, strategy="similarity",
                   temperature=1.0, spread=0.5, greedy=True, seed=3)
    assert out["candidates"][0]["text"] == greedy["winner"]["text"]


def test_confidence_weighs_the_workers_own_logprobs(solo):
    out = generate(solo, "What is the capital of France?", candidates=2, strategy="confidence",
                   temperature=1.0, seed=5)
    logprobs = [c["logprob"] for c in out["candidates"]]
    assert all(isinstance(lp, float) and -20 < lp <= 0 for lp in logprobs), logprobs
    assert out["vote"]["method"] == "confidence" and "of the confidence" in out["vote"]["reason"]
