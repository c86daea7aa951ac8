"""broker/generate.py driven purely: fake slots in a Registry, replies fed in, the Outbox read back."""

from __future__ import annotations

import pytest

from common.bodies import Task
from common.messages import Cancel
from common.profile import WorkerProfile
from tests.generate_util import CLIENT, Swarm

pytestmark = pytest.mark.timeout(10)


def tasks(sent) -> list[tuple[bytes, Task]]:
    return [(ident, m) for ident, m in sent if isinstance(m, Task)]


def finals(sent) -> list[dict]:
    return [m[1] for ident, m in sent if isinstance(m, tuple) and m[0]]


def events(sent) -> list[dict]:
    return [m[1] for ident, m in sent if isinstance(m, tuple) and not m[0]]


def test_three_candidates_over_two_seed_varying_slots_run_two_then_one_more():
    s = Swarm()
    s.add(b"a", seed_variation=True)
    s.add(b"b", seed_variation=True)
    s.submit(candidates=3, seed=100)
    first = tasks(s.sent())
    assert sorted((ident, t.cand) for ident, t in first) == [(b"a", 0), (b"b", 1)]

    s.reply(b"a", now=1.0)
    second = tasks(s.sent())
    assert [(ident, t.cand) for ident, t in second] == [(b"a", 2)]

    s.reply(b"b", now=2.0)
    s.reply(b"a", now=3.0)
    assert len(finals(s.sent())) == 1 and not s.service.jobs
    seeds = {t.cand: t.seed for _, t in first + second}
    assert seeds == {0: 100, 1: 101, 2: 102}


def test_each_candidate_gets_its_own_seed_and_the_shared_sampling():
    s = Swarm()
    for ident in (b"a", b"b", b"c", b"d"):
        s.add(ident)
    s.submit(candidates=4, seed=7, temperature=1.2, max_tokens=5)
    sent = tasks(s.sent())
    assert sorted((t.cand, t.seed) for _, t in sent) == [(0, 7), (1, 8), (2, 9), (3, 10)]
    assert len({ident for ident, _ in sent}) == 4
    assert len({t.job for _, t in sent}) == 1
    assert all(t.sampling.max_tokens == 5 for _, t in sent)
    # one greedy candidate by default, the rest at the temperature asked for
    assert sorted(t.sampling.temperature for _, t in sent) == [0.0, 1.2, 1.2, 1.2]


def test_final_names_a_winner_among_the_candidates_and_lists_them_all():
    s = Swarm()
    for ident in (b"a", b"b", b"c"):
        s.add(ident)
    s.submit(candidates=3, strategy="majority")
    job = tasks(s.sent())[0][1].job
    s.reply(b"a", 1.0, "It is 4")
    s.reply(b"b", 2.0, "5")
    s.reply(b"c", 3.0, "4.")
    (final,) = finals(s.sent())
    assert final["job"] == job and final["strategy"] == "majority"
    assert [c["cand"] for c in final["candidates"]] == [0, 1, 2]
    assert all(c["ok"] and c["attempts"] == 1 for c in final["candidates"])
    assert final["winner"]["cand"] == 0
    assert final["winner"]["text"] == "It is 4" and final["winner"]["peer"] == "A"
    assert set(final["votes"]) == {"0", "1", "2"}
    assert final["usage"]["completion_tokens"] == 6
    assert s.metrics.peer("A").wins == 1


def test_a_timed_out_candidate_is_redispatched_once_and_the_job_ends_in_one_final():
    s = Swarm()
    s.add(b"a", timeout_s=5.0, cancel=True)
    s.add(b"b", timeout_s=5.0)
    s.submit(candidates=1, seed=3)
    assert [ident for ident, _ in tasks(s.sent())] == [b"a"]

    s.service.tick(4.9)
    assert s.sent() == []
    s.service.tick(5.0)
    sent = s.sent()
    assert (b"a", Cancel(CLIENT)) in sent
    assert [(ident, t.cand, t.seed) for ident, t in tasks(sent)] == [(b"b", 0, 3)]
    assert s.metrics.peer("A").timeouts == 1

    s.reply(b"b", 6.0, "4")
    s.reply(b"a", 7.0, "late")  # the cancelled slot's FINAL: it only frees the slot
    (final,) = finals(s.sent())
    assert final["winner"]["peer"] == "B" and final["candidates"][0]["attempts"] == 2
    assert s.registry.get(b"a").idle


def test_a_candidate_that_times_out_twice_fails_and_the_job_ends_in_one_final():
    s = Swarm()
    s.add(b"a", timeout_s=5.0)
    s.add(b"b", timeout_s=5.0)
    s.submit(candidates=1)
    s.service.tick(5.0)
    s.service.tick(10.0)
    s.service.tick(20.0)
    (final,) = finals(s.sent())
    assert "timed out" in final["error"] and final["candidates"][0]["attempts"] == 2


def test_a_lost_slot_fails_its_candidate():
    s = Swarm()
    s.add(b"a")
    s.add(b"b")
    s.submit(candidates=2)
    s.sent()
    slot = s.registry.remove(b"a")
    s.service.on_slot_lost(slot, "disconnected", 1.0)
    assert finals(s.sent()) == []  # b still works on its candidate
    s.reply(b"b", 2.0, "4")
    (final,) = finals(s.sent())
    (lost,) = [c for c in final["candidates"] if not c["ok"]]
    assert lost["error"] and lost["text"] == ""
    assert final["winner"]["peer"] == "B"
    assert s.metrics.peer("A").failures == 1 and "disconnected" in s.metrics.peer("A").last_error


def test_no_serving_slot_gives_an_immediate_error_final():
    s = Swarm()
    s.registry.add(b"e", b"echo", WorkerProfile(name="E"), False, 0.0)
    s.submit()
    sent = s.sent()
    assert len(sent) == 1 and sent[0][0] == CLIENT
    assert "no live worker" in finals(sent)[0]["error"]
    assert not s.service.jobs


def test_without_seed_variation_extra_candidates_fail_with_a_clear_error():
    s = Swarm()
    s.add(b"a")
    s.add(b"b")
    s.submit(candidates=3)
    assert len(tasks(s.sent())) == 2
    s.reply(b"a", 1.0)
    s.reply(b"b", 1.0)
    (final,) = finals(s.sent())
    extra = final["candidates"][2]
    assert not extra["ok"] and extra["attempts"] == 0
    assert extra["error"] == "no live worker slot can take this candidate"
    assert final["winner"]["cand"] in (0, 1)


def test_a_job_whose_candidates_all_fail_ends_in_an_error_final():
    s = Swarm()
    s.add(b"a")
    s.add(b"b")
    s.submit(candidates=2)
    s.sent()
    s.reply(b"a", 1.0, error="out of memory")
    s.reply(b"b", 1.0, error="out of memory")
    (final,) = finals(s.sent())
    assert final["error"].startswith("all 2 candidates failed")
    assert "winner" not in final and [c["ok"] for c in final["candidates"]] == [False, False]
    assert s.metrics.peer("A").failures == 1 and s.metrics.peer("B").failures == 1


def test_the_error_final_says_what_the_worker_reported():
    s = Swarm()
    s.add(b"a")
    s.submit(candidates=1, stream="winner")
    s.reply(b"a", 1.0, error="out of memory")
    (final,) = finals(s.sent())
    assert "out of memory" in final["error"]


@pytest.mark.parametrize("stream, partials", [("winner", False), ("progress", True), ("live", True)])
def test_stream_winner_sends_no_partial_events(stream, partials):
    s = Swarm()
    s.add(b"a")
    s.add(b"b")
    s.submit(candidates=2, stream=stream)
    s.reply(b"a", 1.0, "to", final=False)
    s.reply(b"a", 1.5, "ken")
    s.reply(b"b", 2.0, "token")
    sent = s.sent()
    assert len(finals(sent)) == 1
    assert bool(events(sent)) is partials
    if partials:
        kinds = [e["event"] for e in events(sent)]
        assert kinds.count("dispatched") == 2 and kinds.count("done") == 2 and "token" in kinds
