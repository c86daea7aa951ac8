"""broker/sampling_plan.py: each candidate's temperature and what the answers answer."""

from __future__ import annotations

import pytest

from broker.sampling_plan import plan, question_of, temperatures
from common.bodies import GenerateRequest, Sampling

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("t, spread, n, greedy, out", [
    (0.7, 0.0, 3, False, [0.7, 0.7, 0.7]),
    (0.7, 0.0, 3, True, [0.0, 0.7, 0.7]),
    (1.0, 0.5, 3, False, [0.5, 1.0, 1.5]),
    (0.2, 0.5, 3, False, [0.0, 0.2, 0.7]),     # clamped at 0
    (1.8, 0.5, 2, False, [1.3, 2.0]),          # and at 2
    (0.8, 0.4, 1, False, [0.8]),
    (0.8, 0.4, 1, True, [0.0]),
    (0.8, 0.4, 2, True, [0.0, 0.8]),           # one sampled candidate: no spread
])
def test_temperatures(t, spread, n, greedy, out):
    assert temperatures(t, spread, n, greedy) == pytest.approx(out)


def test_plan_shares_the_input_and_asks_for_logprobs_only_under_confidence():
    req = GenerateRequest.from_map({"prompt": "Q", "candidates": 3, "greedy": True,
                                    "strategy": "confidence"})
    out = plan(req)
    assert [s.temperature for s in out] == [0.0, 0.7, 0.7]
    assert all(s.logprobs and s.prompt == "Q" for s in out)
    assert not any(s.logprobs for s in plan(GenerateRequest.from_map({"prompt": "Q"})))


def test_the_question_is_the_last_user_message_or_the_prompt():
    msgs = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "one"},
            {"role": "assistant", "content": "1"}, {"role": "user", "content": "two"})
    assert question_of(Sampling(messages=msgs)) == "two"
    assert question_of(Sampling(prompt="2+2=")) == "2+2="
    assert question_of(Sampling(messages=({"role": "system", "content": "x"},))) == ""
