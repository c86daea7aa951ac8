"""broker/judge.py: the judge's prompt, reading its pick, and the fallback."""

from __future__ import annotations

import pytest

from broker.judge import JUDGE_ANSWER_CHARS, Judgement, judge_sampling, judged, read_pick
from broker.voting import Answer

pytestmark = pytest.mark.timeout(10)


def answers(*texts: str) -> list[Answer]:
    return [Answer(i, t, 1.0) for i, t in enumerate(texts)]


@pytest.mark.parametrize("text, n, pick", [
    ("2", 3, 2), ("Answer 3.", 3, 3), ("The most consistent is answer 1", 3, 1),
    ("4", 3, None), ("0", 3, None), ("none of them", 3, None), ("", 3, None),
    ("12345678901234567890", 3, None), ("x" * 1000 + "1", 3, None),
])
def test_read_pick_takes_the_first_number_in_range(text, n, pick):
    assert read_pick(text, n) == pick


def test_the_prompt_numbers_the_answers_in_candidate_order_and_clips_long_ones():
    ballot = [Answer(4, "b" * 5000, 1.0), Answer(1, "short", 1.0)]
    sampling, order = judge_sampling("Q?", ballot)
    assert order == (1, 4)
    prompt = sampling.messages[0]["content"]
    assert prompt.index("Answer 1:\nshort") < prompt.index("Answer 2:\nbbb")
    assert len(prompt) < 2 * JUDGE_ANSWER_CHARS + 500
    assert sampling.temperature == 0.0 and sampling.max_tokens <= 16


def test_the_pick_wins_with_the_rest_ranked_below_it():
    ballot = answers("alpha", "beta", "alphas")
    v = judged(ballot, Judgement((0, 1, 2), "2", "w1"))
    assert v.winner == 1 and v.method == "judge" and v.scores[1] == 1.0
    assert max(s for c, s in v.scores.items() if c != 1) < 1.0
    assert v.reason == "the judge (w1) picked answer 2 of 3"


def test_a_pick_of_an_answer_no_longer_in_the_ballot_falls_back():
    v = judged(answers("alpha", "beta"), Judgement((0, 1, 5), "3", "w1"))
    assert v.method == "similarity" and "named no answer" in v.reason


@pytest.mark.parametrize("judgement, why", [
    (None, "too few answers to judge"),
    (Judgement((0, 1), None, "w1", "timed out"), "the judge gave no reply (timed out)"),
    (Judgement((0, 1), "\u202e" * 50, "w1"), "named no answer"),
])
def test_no_usable_judgement_means_similarity_and_the_reason_says_why(judgement, why):
    v = judged(answers("the cat", "the cats"), judgement)
    assert v.method == "similarity" and why in v.reason
