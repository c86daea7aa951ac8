"""broker/voting.py: every strategy, its tie-breaks, and the empty-answer rule."""

from __future__ import annotations

import pytest

from broker.voting import Answer, answer_key, by_similarity, first, majority, vote, weighted

pytestmark = pytest.mark.timeout(10)

STRATEGIES = ["majority", "similarity", "weighted", "first"]


def answers(*texts: str, latency_s: float = 1.0) -> list[Answer]:
    return [Answer(i, t, latency_s) for i, t in enumerate(texts)]


@pytest.mark.parametrize("text, key", [
    ("So the total is 1,250 apples.", "number:1250"),
    ("First 3, then 4, finally -12", "number:-12"),
    ("It costs 3.5 dollars", "number:3.5"),
    ("The answer is (C) because of 42", "option:C"),
    ("option: b", "option:B"),
    ("  Paris!  ", "text:paris"),
    ("PARIS", "text:paris"),
])
def test_answer_key_extracts_option_then_final_number_then_text(text, key):
    assert answer_key(text) == key


def test_answer_key_does_not_read_the_article_a_as_option_a():
    assert answer_key("The answer is a prime number: 7") == "number:7"


def test_majority_groups_by_final_number():
    # Given three wordings of 4 and one 5
    v = majority(answers("5", "2+2 is 4", "The result: 4.", "I think 4"))
    assert v.winner == 1
    assert v.scores == {0: 0.25, 1: 0.75, 2: 0.75, 3: 0.75}
    assert v.method == "majority"


def test_majority_groups_by_option_and_by_normalised_text():
    assert majority(answers("Answer: A", "answer is B", "Option (B)")).winner == 1
    assert majority(answers("london", "Paris.", "  paris ")).winner == 1


def test_similarity_picks_the_medoid():
    v = by_similarity(answers("the cat sat on the mat", "zebra crossing",
                              "the cat sat on a mat", "the cat sat on the hat"))
    assert v.winner == 0
    assert v.scores[1] == min(v.scores.values())
    assert v.winner == max(v.scores, key=v.scores.get)
    assert by_similarity(answers("abc", "abc", "xyz")).scores[0] == pytest.approx(0.5)


def test_weighted_multiplies_similarity_by_reliability():
    texts = ["the cat sat on the mat", "the cat sat on a mat", "a dog barked"]
    plain = by_similarity(answers(*texts))
    rel = [1.0, 0.5, 1.0]
    v = weighted([Answer(i, t, 1.0, r) for i, (t, r) in enumerate(zip(texts, rel))])
    assert v.scores == pytest.approx({i: plain.scores[i] * rel[i] for i in range(3)})
    assert plain.winner == 1 and v.winner == 0


def test_first_picks_the_lowest_latency():
    v = first([Answer(0, "slow", 3.0), Answer(1, "fast", 0.5), Answer(2, "mid", 1.0)])
    assert v.winner == 1 and v.scores == {0: 0.0, 1: 1.0, 2: 0.0}


@pytest.mark.parametrize("strategy", ["majority", "similarity", "weighted"])
def test_ties_go_to_reliability_then_latency_then_lower_candidate(strategy):
    same = "42"
    assert vote(strategy, [Answer(0, same, 1.0, 0.8), Answer(1, same, 1.0, 0.9)]).winner == 1
    assert vote(strategy, [Answer(0, same, 2.0, 0.9), Answer(1, same, 1.0, 0.9)]).winner == 1
    assert vote(strategy, [Answer(1, same, 1.0, 0.9), Answer(0, same, 1.0, 0.9)]).winner == 0


def test_majority_tie_between_groups_goes_to_the_more_reliable_peer():
    v = majority([Answer(0, "4", 0.1, 0.5), Answer(1, "5", 9.0, 1.0)])
    assert v.scores == {0: 0.5, 1: 0.5} and v.winner == 1


def test_first_breaks_latency_ties_by_lower_candidate():
    assert first([Answer(2, "a", 1.0), Answer(1, "b", 1.0)]).winner == 1


def test_first_breaks_latency_ties_by_reliability():
    assert first([Answer(0, "a", 1.0, 0.5), Answer(1, "b", 1.0, 1.0)]).winner == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_answers_lose_to_non_empty_ones(strategy):
    # Given two fast, reliable, agreeing empty answers and one slow real one
    v = vote(strategy, [Answer(0, "", 0.1), Answer(1, "  \n", 0.1), Answer(2, "Paris", 5.0, 0.5)])
    assert v.winner == 2


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_single_answer_wins(strategy):
    v = vote(strategy, [Answer(7, "only", 2.0, 0.3)])
    assert v.winner == 7 and v.method == strategy


def test_all_empty_answers_still_give_a_winner_and_no_answers_is_an_error():
    assert vote("similarity", [Answer(0, "", 1.0), Answer(1, "", 0.5)]).winner == 1
    with pytest.raises(ValueError):
        vote("majority", [])
