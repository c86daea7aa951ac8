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
    (0.8, 0.4, 1, True, [0.8]),                # alone: the temperature asked for
    (0.8, 0.4, 2, True, [0.0, 0.8]),           # one sampled candidate: no spread
])
def test_temperatures(t, spread, n, greedy, out):
    assert temperatures(t, spread, n, greedy) == pytest.approx(out)


def test_plan_shares_the_input_and_asks_for_logprobs_only_under_confidence():
    req = GenerateRequest.from_map({"prompt": "Q", "candidates": 3, "greedy": True,
                                    "strategy": "confidence"})
    out = plan(req, [1, 2, 3])
    assert [s.temperature for s in out] == [0.0, 0.7, 0.7]
    assert all(s.logprobs and s.prompt == "Q" for s in out)
    plain = plan(GenerateRequest.from_map({"prompt": "Q"}), [1, 2, 3])
    assert not any(s.logprobs for s in plain)
    assert [s.temperature for s in plain] == [0.0, 0.7, 0.7]  # one greedy candidate by default


def test_the_question_is_the_last_user_message_or_the_prompt():
    msgs = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "one"},
            {"role": "assistant", "content": "1"}, {"role": "user", "content": "two"})
    assert question_of(Sampling(messages=msgs)) == "two"
    assert question_of(Sampling(prompt="2+2=")) == "2+2="
    assert question_of(Sampling(messages=({"role": "system", "content": "x"},))) == ""


def chat(n_examples: int, system: bool = True) -> tuple[dict[str, str], ...]:
    out = [{"role": "system", "content": "Answer briefly."}] if system else []
    for i in range(n_examples):
        out += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    return tuple(out + [{"role": "user", "content": "the question"}])


def test_shuffle_gives_each_candidate_but_the_first_its_own_example_order():
    req = GenerateRequest.from_map({"messages": list(chat(6)), "candidates": 4,
                                    "shuffle_examples": True})
    out = plan(req, [10, 11, 12, 13])
    assert out[0].messages == chat(6)
    orders = {tuple(m["content"] for m in s.messages) for s in out}
    assert len(orders) == 4
    for s in out:  # the same turns, pairs kept whole, the system first, the question last
        assert sorted(s.messages, key=str) == sorted(chat(6), key=str)
        assert s.messages[0]["role"] == "system" and s.messages[-1]["content"] == "the question"
        pairs = [(s.messages[i]["content"], s.messages[i + 1]["content"])
                 for i in range(1, len(s.messages) - 1, 2)]
        assert all(q[1:] == a[1:] for q, a in pairs)
    assert plan(req, [10, 11, 12, 13]) == out  # the seed decides


@pytest.mark.parametrize("messages", [
    chat(1),                                                       # one example: nothing to shuffle
    chat(3)[:-1] + ({"role": "assistant", "content": "x"},),       # no question last
    chat(3)[:3] + ({"role": "tool", "content": "r"},) + chat(3)[3:],  # not plain pairs
])
def test_shuffle_leaves_what_is_not_examples_then_a_question_alone(messages):
    req = GenerateRequest.from_map({"messages": list(messages), "candidates": 3,
                                    "shuffle_examples": True})
    assert all(s.messages == messages for s in plan(req, [1, 2, 3]))
