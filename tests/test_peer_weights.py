"""Per-peer weights from the broker's config file (broker/peers.py) in majority-style votes
and early quorum, driven purely."""

from __future__ import annotations

import pytest

from broker.peers import EVEN, Weights
from broker.voting import Answer, auto, confidence, majority, by_similarity
from tests.test_consensus_flow import answer, running, swarm
from tests.test_generate_logic import finals

pytestmark = pytest.mark.timeout(10)


def ballot(*texts_and_weights: tuple[str, float], logprob: float | None = None) -> list[Answer]:
    return [Answer(i, text, 1.0, weight=w, logprob=logprob)
            for i, (text, w) in enumerate(texts_and_weights)]


def test_a_heavy_peer_outvotes_two_light_ones_under_majority_auto_and_confidence():
    answers = ballot(("12", 1.0), ("12", 1.0), ("13", 3.0))
    for method in (majority, auto, confidence):
        v = method(answers)
        assert v.winner == 2, method
        assert v.scores[2] == pytest.approx(0.6)
    assert "1 of 3 answers say 13, weighing 3 of 5 by peer weight" in majority(answers).reason


def test_even_weights_count_answers_as_before():
    v = majority(ballot(("12", 1.0), ("12", 1.0), ("13", 1.0)))
    assert v.winner in (0, 1) and v.reason == "2 of 3 answers say 12"


def test_confidence_multiplies_the_peer_weight_into_each_answers_confidence():
    # equal log-probabilities: the weights alone decide; weight 0 counts for nothing
    v = confidence(ballot(("12", 0.0), ("12", 0.0), ("13", 0.5), logprob=-0.5))
    assert v.winner == 2 and v.scores[2] == pytest.approx(1.0)


def test_similarity_ignores_weights():
    v = by_similarity(ballot(("the sky is blue", 1.0), ("the sky is blue!", 1.0),
                             ("grass is green", 9.0)))
    assert v.winner in (0, 1)


def test_weights_default_to_one_and_the_top_bounds_an_open_candidate():
    weights = Weights({"gpu": 2.5, "slow": 0.5})
    assert (weights("gpu"), weights("slow"), weights("other"), weights(None)) == (2.5, 0.5, 1, 1)
    assert weights.top == 2.5 and Weights({"slow": 0.5}).top == 1.0 and EVEN.top == 1.0


# -- early quorum with weights ---------------------------------------------------------------
def weighed_swarm(weights: dict[str, float]):
    """5 slots A..E, one 5-candidate majority job; returns it with candidate by slot."""
    s = swarm(5)
    s.service.ballots.weights = Weights(weights)
    s.submit(candidates=5, strategy="majority")
    return s, {ident: cand for cand, ident in running(s).items()}


def test_quorum_waits_while_a_heavy_peer_could_still_overturn_the_vote():
    # Given peer E weighs 3 and three light answers agree while E's candidate is open
    s, on = weighed_swarm({"E": 3.0})
    for slot in b"abc":
        answer(s, on[bytes([slot])], "12", 1.0)
    # Then 3 for 12 is not more than 0 + 2 open at up to 3 each (unweighted, it would end)
    assert not finals(s.sent())
    answer(s, on[b"e"], "13", 2.0)   # 13 weighs 3 against 12's 3, one open
    assert not finals(s.sent())
    answer(s, on[b"d"], "13", 3.0)
    (final,) = finals(s.sent())
    assert final["winner"]["cand"] in (on[b"d"], on[b"e"]) and final["vote"]["cancelled"] == 0
    assert "2 of 5 answers say 13, weighing 4 of 7 by peer weight" in final["vote"]["reason"]


def test_quorum_ends_early_once_weighted_agreement_cannot_be_overtaken():
    # Given peer A weighs 5
    s, on = weighed_swarm({"A": 5.0})
    answer(s, on[b"a"], "12", 1.0)  # 5 > 0 + 4 open x 5? no
    answer(s, on[b"b"], "12", 1.0)  # 6 > 0 + 3 x 5? no
    answer(s, on[b"c"], "12", 1.0)  # 7 > 0 + 2 x 5? no
    assert not finals(s.sent())
    answer(s, on[b"d"], "12", 1.0)  # 8 > 0 + 1 x 5: decided
    (final,) = finals(s.sent())
    assert final["vote"]["cancelled"] == 1


def test_a_weightless_peer_cannot_make_a_quorum():
    # Given peers A, B, C weigh 0: their agreement counts nothing, so the rest must finish
    s, on = weighed_swarm({"A": 0.0, "B": 0.0, "C": 0.0})
    for slot in b"abc":
        answer(s, on[bytes([slot])], "12", 1.0)
    assert not finals(s.sent())
    answer(s, on[b"d"], "13", 1.0)
    assert not finals(s.sent())
    answer(s, on[b"e"], "14", 1.0)
    (final,) = finals(s.sent())
    assert final["vote"]["cancelled"] == 0 and final["winner"]["text"] in ("13", "14")
