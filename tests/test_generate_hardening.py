"""The generate logic under wrong-but-plausible input, load and early endings (issue 5)."""

from __future__ import annotations

import pytest

from broker import scheduler
from broker.policy import Limits
from broker.metrics import MetricsBook
from common.codec import pack
from common.messages import Cancel, WorkerReply
from tests.test_generate_logic import CLIENT, Swarm, events, finals, tasks

pytestmark = pytest.mark.timeout(20)


def raw_final(s: Swarm, identity: bytes, now: float, **body) -> None:
    """A FINAL whose body the test writes by hand, job and cand filled in unless given."""
    slot = s.registry.get(identity)
    job, cand = slot.job
    full = {"job": job, "cand": cand, **body}
    s.service.on_reply(slot, WorkerReply(CLIENT, (pack(full),), True), now)


# -- 1. values that are used as numbers are checked ------------------------------------------
def test_null_usage_counts_as_not_reported_and_the_job_answers():
    s = Swarm()
    s.add(b"a")
    s.submit(candidates=1)
    raw_final(s, b"a", 1.0, text="4", usage={"completion_tokens": None, "prompt_tokens": None})
    (final,) = finals(s.sent())
    assert final["winner"]["text"] == "4"
    assert final["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize("body", [
    {"text": "4", "usage": {"prompt_tokens": "3"}},
    {"text": "4", "usage": {"completion_tokens": -1}},
    {"text": "4", "usage": "lots"},
    {"text": "4", "timings": {"total_s": float("nan")}},
    {"text": 4},
    {"text": "4", "finish_reason": "x" * 65},
    {"error": "x", "error_kind": "nobody"},
    {"text": "4", "logprob": 0.5},             # a probability over 1
    {"text": "4", "logprob": float("-inf")},
    {"text": "4", "logprob": "sure"},
    {"text": "4", "logprob": True},
], ids=repr)
def test_a_bad_number_in_a_final_fails_that_candidate_and_the_client_still_gets_one_final(body):
    s = Swarm()
    s.add(b"a")
    s.add(b"b")
    s.submit(candidates=1)
    first = tasks(s.sent())[0][0]
    raw_final(s, first, 1.0, **body)
    sent = s.sent()
    assert finals(sent) == []  # retried on the other slot
    (retry,) = tasks(sent)
    s.reply(retry[0], 2.0, "4")
    (final,) = finals(s.sent())
    assert final["winner"]["text"] == "4"
    assert final["candidates"][0]["attempts"] == 2
    assert s.service.stats["malformed_replies"] == 1 and not s.service.jobs


def test_a_long_error_from_a_peer_is_cut_to_a_log_line():
    s = Swarm()
    s.add(b"a")
    s.submit(candidates=1)
    raw_final(s, b"a", 1.0, error="boom " * 100_000)
    (final,) = finals(s.sent())
    assert len(final["error"]) < 1200 and len(s.metrics.peer("A").last_error) < 1100


def test_a_reply_naming_another_job_or_candidate_fails_the_candidate():
    s = Swarm()
    s.add(b"a", cancel=True)
    s.submit(candidates=1)
    slot = s.registry.get(b"a")
    job, _ = slot.job
    s.service.on_reply(slot, WorkerReply(CLIENT, (pack({"job": job, "cand": 7, "seq": 0,
                                                           "text": "x"}),), False), 1.0)
    sent = s.sent()
    assert (b"a", Cancel(CLIENT)) in sent  # it stays busy until its FINAL, but is told to stop
    assert finals(sent) == []
    s.reply(b"a", 2.0, "late")  # its FINAL frees the slot; no other slot may retry
    (final,) = finals(s.sent())
    assert "candidate 7" in final["error"] and s.service.stats["malformed_replies"] == 1


def test_the_step_that_ends_a_job_cannot_lose_its_final():
    class BrokenVoter:
        def submit(self, fn, *args):
            raise RuntimeError("executor is gone")

    s = Swarm()
    s.service.ballots.voter = BrokenVoter()
    s.add(b"a")
    s.submit(candidates=1)
    s.reply(b"a", 1.0, "4")
    (final,) = finals(s.sent())
    assert "could not be counted" in final["error"] and not s.service.jobs


# -- 3, 4. dispatch costs what changed, and slots are shared fairly ---------------------------
def test_submitting_many_jobs_does_not_rescan_what_is_already_queued(monkeypatch):
    picks = []
    real = scheduler.pick
    monkeypatch.setattr(scheduler, "pick", lambda *a: picks.append(1) or real(*a))
    s = Swarm()
    s.add(b"a", seed_variation=True)
    s.add(b"b", seed_variation=True)
    for i in range(200):
        s.submit(now=i * 0.001, candidates=64)
    # two placements, then nothing is idle: a submit costs nothing more however long the queue
    assert len(picks) == 2
    assert len(tasks(s.sent())) == 2


def test_beyond_the_queue_bound_a_job_gets_a_clear_busy_final():
    s = Swarm()
    s.service.limits = Limits(max_jobs=3, max_candidates=100)
    s.add(b"a", seed_variation=True)
    for _ in range(3):
        s.submit(candidates=2)
    s.submit(candidates=1)
    busy = [f for f in finals(s.sent()) if "busy" in f.get("error", "")]
    assert len(busy) == 1 and "try again" in busy[0]["error"]
    assert len(s.service.jobs) == 3 and s.service.stats["busy"] == 1


def test_a_one_candidate_job_is_not_starved_by_an_earlier_big_job():
    s = Swarm()
    s.add(b"a", seed_variation=True)
    s.submit(now=0.0, candidates=64)
    big = tasks(s.sent())[0][1].job
    s.submit(now=0.1, candidates=1)
    s.reply(b"a", 1.0, "x")
    (nxt,) = tasks(s.sent())
    assert nxt[1].job != big  # the small job's candidate goes next, not the big job's second


# -- 10. the job's deadline is not the peer's fault -------------------------------------------
def test_a_job_deadline_does_not_count_against_a_healthy_peer():
    s = Swarm()
    s.add(b"a", cancel=True)
    s.submit(candidates=1, timeout_s=2.0)
    s.service.tick(2.0)
    sent = s.sent()
    assert (b"a", Cancel(CLIENT)) in sent
    (final,) = finals(sent)
    assert "deadline" in final["error"]
    peer = s.metrics.peer("A")
    assert (peer.failures, peer.timeouts, peer.cancelled, peer.reliability) == (0, 0, 1, 1.0)


def test_the_peers_own_timeout_still_counts_against_it():
    s = Swarm()
    s.add(b"a", timeout_s=1.0)
    s.submit(candidates=1, timeout_s=10.0)
    s.service.tick(1.0)
    assert s.metrics.peer("A").timeouts == 1


# -- 11. first answers with the first valid candidate and cancels the rest --------------------
def test_first_answers_at_the_first_valid_candidate_and_cancels_the_rest():
    s = Swarm()
    for ident in (b"a", b"b", b"c"):
        s.add(ident, cancel=True)
    s.add(b"d")
    s.submit(candidates=4, strategy="first")
    s.sent()
    s.reply(b"b", 1.0, "   ")  # empty text is not a valid answer: keep waiting
    assert finals(s.sent()) == []
    s.reply(b"c", 2.0, "Paris")
    sent = s.sent()
    (final,) = finals(sent)
    assert final["winner"]["text"] == "Paris" and final["strategy"] == "first"
    assert {(i, m) for i, m in sent if isinstance(m, Cancel)} == {(b"a", Cancel(CLIENT))}
    states = {c["cand"]: c["state"] for c in final["candidates"]}
    assert states == {0: "cancelled", 1: "done", 2: "done", 3: "cancelled"}
    assert [e["event"] for e in events(sent)].count("cancelled") == 2
    assert s.metrics.peer("A").failures == 0


# -- 13. a request that cannot fit is not retried and not held against the peer ---------------
def test_a_request_fault_is_not_retried_and_not_blamed():
    s = Swarm()
    s.add(b"a")
    s.add(b"b")
    s.submit(candidates=1)
    first = tasks(s.sent())[0][0]
    raw_final(s, first, 1.0, error="prompt of 900 tokens does not fit the context window of 256",
              error_kind="request")
    sent = s.sent()
    assert tasks(sent) == []
    (final,) = finals(sent)
    assert "does not fit" in final["error"]
    assert s.metrics.peer(first.decode().upper()).failures == 0


# -- 6. a client that gives up ----------------------------------------------------------------
def test_cancel_client_stops_running_candidates_and_drops_waiting_ones():
    s = Swarm()
    s.add(b"a", cancel=True)
    s.submit(candidates=3)
    s.sent()
    assert s.service.cancel_client(CLIENT, 1.0) == 1
    sent = s.sent()
    assert (b"a", Cancel(CLIENT)) in sent
    (final,) = finals(sent)
    assert final["error"] == "cancelled by the client" and not s.service.jobs
    s.reply(b"a", 2.0, "late")  # the slot's FINAL frees it; nothing else is dispatched
    assert tasks(s.sent()) == [] and s.registry.get(b"a").idle
    assert s.service.cancel_client(CLIENT, 3.0) == 0


# -- 8. metrics forget anonymous peers and bound named ones -----------------------------------
def test_metrics_trim_keeps_live_peers_and_the_most_recent_gone_ones():
    book = MetricsBook(max_peers=2)
    for name in ("old", "mid", "new", "live"):
        book.peer(name)
    book.trim({"live"})
    assert book.names() == ["live", "mid", "new"]
    book.forget("mid")
    assert book.names() == ["live", "new"]


def test_timeouts_sit_in_a_heap_so_a_tick_touches_only_what_is_due():
    s = Swarm()
    s.add(b"a", seed_variation=True, timeout_s=100.0)
    for _ in range(50):
        s.submit(candidates=10)
    s.sent()
    before = len(s.service.timers)
    s.service.tick(1.0)
    assert len(s.service.timers) == before and len(s.service.jobs) == 50
    assert s.sent() == []  # nothing was due, so nothing changed
    s.service.tick(60.0)  # every job's deadline (the 60 s default) comes due together
    assert len(finals(s.sent())) == 50 and not s.service.jobs
