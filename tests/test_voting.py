"""broker/voting.py: every strategy, its tie-breaks, and the empty-answer rule."""

from __future__ import annotations

import pytest

from broker.voting import Answer, answer_key, by_similarity, first, majority, vote, weighted

pytestmark = pytest.mark.timeout(10)

STRATEGIES = ["majority", "similarity", "weighted", "first", "confidence", "auto", "judge"]
METHOD = {"auto": "similarity", "judge": "similarity"}  # what counts for a lone answer


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


@pytest.mark.parametrize("strategy", ["majority", "similarity", "weighted", "auto", "confidence"])
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
    assert v.winner == 7 and v.method == METHOD.get(strategy, strategy)


def test_all_empty_answers_still_give_a_winner_and_no_answers_is_an_error():
    assert vote("similarity", [Answer(0, "", 1.0), Answer(1, "", 0.5)]).winner == 1
    with pytest.raises(ValueError):
        vote("majority", [])


# -- issue 8: auto, confidence, explanations, hostile texts ----------------------------------
def test_auto_takes_majority_over_short_extractable_answers_and_says_so():
    v = vote("auto", answers("The answer is 12.", "12", "I get 13", "so 12 apples"))
    assert v.method == "majority" and v.winner == 0
    assert v.reason == "auto chose majority (short answers): 3 of 4 answers say 12"
    assert v.groups == {0: 0, 1: 0, 2: 1, 3: 0} and v.agreed[2] == ()


def test_auto_takes_similarity_over_free_form_answers_and_says_so():
    v = vote("auto", answers("the cat sat on the mat", "the cat sat on a mat", "a dog barked"))
    assert v.method == "similarity" and v.winner == 1
    assert v.reason.startswith("auto chose similarity (free-form answers): closest to the others")
    assert v.agreed[1] == (0,) and v.groups == {0: 0, 1: 0, 2: 1}


def test_confidence_weights_groups_by_a_softmax_of_mean_logprobs():
    texts = ["12", "13", "13"]
    plain = vote("majority", answers(*texts))
    v = vote("confidence", [Answer(i, t, 1.0, 1.0, lp) for i, (t, lp)
                            in enumerate(zip(texts, [-0.1, -3.0, -3.0]))])
    assert plain.winner == 1 and v.winner == 0
    w = [1.0, pytest.approx(0.055, abs=1e-3)]
    assert v.scores[0] == pytest.approx(1 / (1 + 2 * 0.0550), abs=1e-3) and w


def test_confidence_without_logprobs_is_plain_majority_and_says_so():
    v = vote("confidence", answers("12", "13", "13"))
    assert v.winner == 1 and v.reason.startswith("no answer reported its confidence")


def test_confidence_missing_logprob_counts_as_the_least_sure():
    v = vote("confidence", [Answer(0, "12", 1.0, 1.0, None), Answer(1, "13", 1.0, 1.0, -2.0)])
    assert v.scores[0] == pytest.approx(0.5) and v.winner == 0  # tie: lower index


def test_no_agreement_says_how_the_tie_was_broken():
    v = vote("majority", [Answer(0, "4", 2.0, 0.5), Answer(1, "5", 1.0, 0.9)])
    assert v.winner == 1 and "no two of the 2 answers agreed" in v.reason


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unicode_and_very_long_texts_vote_and_explain(strategy):
    long = "数" * 400_000 + " The answer is 42."
    v = vote(strategy, [Answer(0, long, 1.0), Answer(1, "Ответ: 42 🙂", 2.0),
                        Answer(2, "\x00\u202e 41", 3.0)])
    assert v.winner in (0, 1, 2) and v.reason
    assert all(len(s) < 200 for s in v.shown.values())
