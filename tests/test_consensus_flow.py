"""Issue 8 in the generate service, driven purely: early quorum, the judge, per-candidate
temperatures, log-probabilities asked for, and the FINAL's explained vote."""

from __future__ import annotations

import pytest

from common.bodies import Outcome
from common.codec import pack
from common.messages import Cancel, WorkerReply
from tests.test_generate_logic import Swarm, events, finals, tasks

pytestmark = pytest.mark.timeout(10)


def swarm(n: int, cancel: bool = True) -> Swarm:
    s = Swarm()
    for i in range(n):
        s.add(bytes([97 + i]), seed_variation=True, cancel=cancel)
    return s


def running(s: Swarm) -> dict[int, bytes]:
    """candidate index -> the slot working on it."""
    return {slot.job[1]: slot.identity for slot in s.registry.all() if slot.job}


def answer(s: Swarm, cand: int, text: str, now: float, logprob: float | None = None) -> None:
    slot = s.registry.get(running(s)[cand])
    job, index = slot.job
    body = Outcome(job, index, text, "stop", {"completion_tokens": 3}, logprob=logprob)
    s.service.on_reply(slot, WorkerReply(b"client-1", (pack(body.to_map()),), True), now)


# -- early quorum ---------------------------------------------------------------------------
def test_majority_ends_once_the_leader_cannot_be_overtaken_and_cancels_the_rest():
    s = swarm(5)
    s.submit(candidates=5, strategy="majority")
    s.sent()
    answer(s, 0, "The answer is 12.", 2.0)
    answer(s, 1, "12", 2.0)
    assert not finals(s.sent())            # 2 vs at most 0 + 3 open: not yet
    s.reply(running(s)[3], 1.5, "Well", final=False)  # 1 token in 3 s: 2 more would take 6 s
    answer(s, 2, "So it is 12", 3.0)       # 3 > 0 + 2 open: decided
    sent = s.sent()
    cancels = [ident for ident, m in sent if isinstance(m, Cancel)]
    assert sorted(cancels) == [b"d", b"e"]
    (final,) = finals(sent)
    assert final["winner"]["cand"] in (0, 1, 2)
    assert final["vote"]["method"] == "majority" and final["vote"]["cancelled"] == 2
    assert final["vote"]["saved_s"] == pytest.approx(6.0)
    states = [c["state"] for c in final["candidates"]]
    assert states == ["done", "done", "done", "cancelled", "cancelled"]
    assert "early quorum" in final["candidates"][3]["error"]


def test_a_split_vote_waits_for_every_candidate():
    s = swarm(3)
    s.submit(candidates=3, strategy="majority")
    answer(s, 0, "12", 1.0)
    answer(s, 1, "13", 1.0)
    assert not finals(s.sent())
    answer(s, 2, "13", 2.0)
    (final,) = finals(s.sent())
    assert final["winner"]["cand"] in (1, 2) and final["vote"]["cancelled"] == 0


def test_quorum_off_or_a_non_majority_strategy_lets_every_candidate_finish():
    for body in ({"strategy": "majority", "quorum": False}, {"strategy": "similarity"},
                 {"strategy": "confidence"}):
        s = swarm(3)
        s.submit(candidates=3, **body)
        answer(s, 0, "12", 1.0)
        answer(s, 1, "12", 1.0)
        assert not finals(s.sent()), body
        answer(s, 2, "12", 1.0)
        assert len(finals(s.sent())) == 1


def test_auto_waits_while_free_form_answers_could_still_turn_it_to_similarity():
    # Given 5 candidates, 3 extracted alike but 1 long free-form: 3 extracted of at most 6... 
    s = swarm(5)
    s.submit(candidates=5)  # auto, the default
    answer(s, 0, "It depends on many things and nobody can say.", 1.0)
    answer(s, 1, "Nobody knows, it depends.", 1.0)
    answer(s, 2, "7", 1.0)
    answer(s, 3, "7", 1.0)
    # 7 leads 2 to 1 with one open, and only 2 of 5 possible answers are extracted
    assert not finals(s.sent())
    answer(s, 4, "7", 2.0)
    (final,) = finals(s.sent())
    assert final["strategy"] == "auto" and final["vote"]["method"] == "majority"
    assert final["vote"]["reason"].startswith("auto chose majority")


def test_auto_quorum_fires_when_extracted_answers_are_enough():
    s = swarm(5)
    s.submit(candidates=5)
    for cand in range(3):
        answer(s, cand, f"The answer is {4}.", 1.0 + cand)
    (final,) = finals(s.sent())
    assert final["vote"]["cancelled"] == 2 and final["winner"]["text"] == "The answer is 4."


# -- the explained FINAL ---------------------------------------------------------------------
def test_the_final_explains_each_candidate_its_answer_group_score_and_who_agreed():
    s = swarm(4)
    s.submit(candidates=4, strategy="majority", quorum=False)
    for cand, text in enumerate(["It is 1,250 km.", "1250", "about 900", "The answer is 1250"]):
        answer(s, cand, text, 1.0 + cand)
    (final,) = finals(s.sent())
    cands = final["candidates"]
    assert [c["group"] for c in cands] == [0, 0, 1, 0]
    assert cands[0]["answer"] == "1,250" and cands[2]["answer"] == "900"
    assert cands[0]["agreed"] == [1, 3] and cands[2]["agreed"] == []
    assert [c["score"] for c in cands] == [0.75, 0.75, 0.25, 0.75]
    assert final["vote"]["reason"] == "3 of 4 answers say 1,250"
    assert final["winner"]["cand"] == 0  # the tie inside the group: fastest


def test_confidence_asks_for_logprobs_and_weights_the_vote_by_them():
    s = swarm(3)
    s.submit(candidates=3, strategy="confidence")
    assert all(t.sampling.logprobs for _, t in tasks(s.sent()))
    answer(s, 0, "12", 1.0, logprob=-0.05)   # sure
    answer(s, 1, "13", 1.0, logprob=-2.5)    # two unsure answers agree on 13
    answer(s, 2, "13", 1.0, logprob=-2.6)
    (final,) = finals(s.sent())
    assert final["winner"]["cand"] == 0 and final["vote"]["method"] == "confidence"
    assert [c["logprob"] for c in final["candidates"]] == [-0.05, -2.5, -2.6]
    assert "of the confidence" in final["vote"]["reason"]


def test_without_confidence_no_worker_is_asked_for_logprobs():
    s = swarm(2)
    s.submit(candidates=2, strategy="majority")
    assert not any(t.sampling.logprobs for _, t in tasks(s.sent()))


# -- per-candidate temperatures ---------------------------------------------------------------
def test_spread_and_greedy_give_each_candidate_its_temperature():
    s = swarm(5)
    s.submit(candidates=5, temperature=0.8, temperature_spread=0.4, greedy=True)
    temps = {t.cand: t.sampling.temperature for _, t in tasks(s.sent())}
    assert temps == {0: 0.0, 1: 0.4, 2: pytest.approx(0.6667, abs=1e-4),
                     3: pytest.approx(0.9333, abs=1e-4), 4: 1.2}


# -- the judge -------------------------------------------------------------------------------
def judge_slot(s: Swarm) -> bytes:
    (ident,) = [ident for ident, t in tasks(s.sent()) if t.cand == 3]
    return ident


def test_judge_asks_a_worker_to_pick_and_its_pick_wins():
    s = swarm(3)
    s.submit(candidates=3, strategy="judge")
    for cand, text in enumerate(["Paris is the capital.", "Lyon.", "The capital is Paris."]):
        answer(s, cand, text, 1.0)
    sent = s.sent()
    assert not finals(sent)
    (ident, task), = [(i, t) for i, t in tasks(sent) if t.cand == 3]
    prompt = task.sampling.messages[0]["content"]
    assert "Answer 1:\nParis is the capital." in prompt and "Answer 3:" in prompt
    assert task.sampling.temperature == 0.0
    assert not [e for e in events(sent) if e["cand"] == 3]  # the judge is not a candidate
    answer(s, 3, "3", 2.0)
    (final,) = finals(s.sent())
    assert final["winner"]["cand"] == 2 and final["vote"]["method"] == "judge"
    assert final["vote"]["judge"]["text"] == "3" and len(final["candidates"]) == 3
    assert final["usage"]["completion_tokens"] == 12  # the judge's tokens were spent too


@pytest.mark.parametrize("reply", ["I cannot tell", "7", "0", "99999999"])
def test_an_unusable_judgement_falls_back_to_similarity_and_says_so(reply):
    s = swarm(3)
    s.submit(candidates=3, strategy="judge")
    for cand, text in enumerate(["the cat sat", "the cat sat down", "a dog"]):
        answer(s, cand, text, 1.0)
    s.sent()
    answer(s, 3, reply, 2.0)
    (final,) = finals(s.sent())
    assert final["vote"]["method"] == "similarity"
    assert "named no answer" in final["vote"]["reason"]
    assert final["winner"]["cand"] in (0, 1)


def test_a_failed_judge_falls_back_and_the_job_still_ends_once():
    s = swarm(3)
    s.submit(candidates=3, strategy="judge")
    for cand, text in enumerate(["alpha", "beta", "alphas"]):
        answer(s, cand, text, 1.0)
    s.sent()
    for now in (2.0, 3.0):  # it fails, is retried once elsewhere, fails again
        ident = running(s)[3]
        slot = s.registry.get(ident)
        job, index = slot.job
        body = Outcome(job, index, error="out of memory")
        s.service.on_reply(slot, WorkerReply(b"client-1", (pack(body.to_map()),), True), now)
    (final,) = finals(s.sent())
    assert final["vote"]["method"] == "similarity"
    assert "the judge gave no reply" in final["vote"]["reason"]


def test_agreeing_answers_need_no_judge():
    s = swarm(3)
    s.submit(candidates=3, strategy="judge")
    for cand in range(3):
        answer(s, cand, "Paris", 1.0)
    sent = s.sent()
    assert not [t for _, t in tasks(sent) if t.cand == 3]
    (final,) = finals(sent)
    assert "too few answers to judge" in final["vote"]["reason"]


def test_the_deadline_stops_a_judge_still_running():
    s = swarm(2)
    s.submit(candidates=2, strategy="judge", timeout_s=10)
    answer(s, 0, "one", 1.0)
    answer(s, 1, "two", 1.0)
    s.sent()
    s.service.tick(11.0)
    sent = s.sent()
    (final,) = finals(sent)
    assert [m for _, m in sent if isinstance(m, Cancel)]
    assert final["vote"]["judge"]["state"] == "cancelled"
    assert final["vote"]["method"] == "similarity"
