"""broker/registry.py keeps indexes (idle slots, serving slots, models, heartbeat and expiry
heaps) so a dispatch costs what changed; under any sequence of slots joining, taking and
ending work, falling silent and leaving, each index answers what a scan of every slot would."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.registry import Registry
from common.profile import WorkerProfile

pytestmark = pytest.mark.timeout(60)

SERVICES = (b"generate", b"echo")
IDS = [bytes([i]) for i in range(6)]

ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.sampled_from(IDS), st.sampled_from(SERVICES),
              st.sampled_from(["", "qwen", "llama"]), st.sampled_from([0.5, 1.0, 2.0])),
    st.tuples(st.just("assign"), st.sampled_from(IDS), st.integers(0, 3)),
    st.tuples(st.just("free"), st.sampled_from(IDS)),
    st.tuples(st.just("remove"), st.sampled_from(IDS)),
    st.tuples(st.just("touch"), st.sampled_from(IDS)),
    st.tuples(st.just("wait"), st.floats(0.0, 3.0)),
), max_size=60)


def scan_idle(reg: Registry, service: bytes) -> set[bytes]:
    return {s.identity for s in reg.all() if s.service == service and s.job is None}


def check(reg: Registry) -> None:
    for service in SERVICES:
        slots = [s for s in reg.all() if s.service == service]
        assert {s.identity for s in reg.idle(service)} == scan_idle(reg, service)
        assert len(reg.idle(service)) == len(scan_idle(reg, service))  # no duplicates
        assert {s.identity for s in reg.serving(service)} == {s.identity for s in slots}
        assert reg.has(service) == bool(slots)
        assert reg.models(service) == {s.profile.model for s in slots if s.profile.model}


@settings(max_examples=300, deadline=None)
@given(ops)
def test_indexes_equal_a_scan_of_every_slot(steps):
    reg, now = Registry(interval_s=1.0, liveness=3), 0.0
    for op, *args in steps:
        slot = reg.get(args[0]) if op not in ("wait",) else None
        if op == "add" and slot is None:
            identity, service, model, hb = args
            reg.add(identity, service, WorkerProfile(name=identity.hex(), model=model,
                                                     heartbeat_s=hb), False, now)
        elif op == "assign" and slot is not None:
            slot.job = ("job", args[1])
        elif op == "free" and slot is not None:
            slot.job = None
        elif op == "remove":
            gone = reg.remove(args[0])
            if gone is not None:
                gone.job = None  # what on_slot_lost does: it must not come back as idle
        elif op == "touch":
            reg.touch(args[0], now)
        elif op == "wait":
            now += args[0]
            expected_dead = {s.identity for s in reg.all() if s.expires_at <= now}
            expected_beats = {s.identity for s in reg.all() if s.next_beat <= now}
            assert sorted(s.identity for s in reg.beats_due(now)) == sorted(expected_beats)
            assert sorted(s.identity for s in reg.purge(now)) == sorted(expected_dead)
            assert all(s.next_beat > now and s.expires_at > now for s in reg.all())
        check(reg)


def test_a_slot_that_takes_work_leaves_the_idle_index_and_returns_when_it_ends():
    reg = Registry(interval_s=1.0, liveness=3)
    a = reg.add(b"a", b"generate", WorkerProfile(name="a"), False, 0.0)
    reg.add(b"b", b"generate", WorkerProfile(name="b"), False, 0.0)
    a.job = ("job", 0)
    assert [s.identity for s in reg.idle(b"generate")] == [b"b"]
    a.job = None
    assert {s.identity for s in reg.idle(b"generate")} == {b"a", b"b"}


def test_a_slot_heard_from_outlives_its_first_expiry_and_dies_at_its_last():
    reg = Registry(interval_s=1.0, liveness=3)
    reg.add(b"a", b"generate", WorkerProfile(name="a"), False, 0.0)
    for t in (1.0, 2.0, 3.0, 4.0):
        reg.touch(b"a", t)
        assert reg.purge(t) == []
    assert reg.purge(6.9) == [] and [s.identity for s in reg.purge(7.0)] == [b"a"]
    assert not reg.has(b"generate") and reg.idle(b"generate") == []


def test_an_identity_that_comes_back_is_judged_by_its_new_slot_not_the_old_ones_heap_entries():
    reg = Registry(interval_s=1.0, liveness=3)
    reg.add(b"a", b"generate", WorkerProfile(name="a"), False, 0.0)   # beats at 1, dies at 3
    reg.remove(b"a")
    again = reg.add(b"a", b"generate", WorkerProfile(name="a"), False, 1.5)  # dies at 4.5
    assert reg.beats_due(1.2) == []
    assert reg.beats_due(2.5) == [again]
    assert reg.purge(3.5) == [] and reg.get(b"a") is again
    assert reg.purge(4.5) == [again]


def test_the_router_finds_its_overdue_slots_among_its_own_services_only():
    from broker.outbox import Outbox
    from broker.routing import Router
    reg = Registry(interval_s=1.0, liveness=3)
    echo = reg.add(b"e", b"echo", WorkerProfile(name="e"), False, 0.0)
    gen = reg.add(b"g", b"generate", WorkerProfile(name="g"), False, 0.0)
    gen.job = ("job", 0)
    router = Router(reg, Outbox(), timeout_s=5.0)
    router.submit(b"client", False, b"echo", (b"hi",), now=0.0)
    assert echo.job is not None and reg.idle(b"echo") == []
    assert router.tick(4.0) == []
    assert router.tick(5.0) == [echo]


def test_jobs_queued_behind_a_busy_model_cost_a_dispatch_no_scan_of_the_slots_each(monkeypatch):
    from broker import scheduler
    from tests.generate_util import Swarm
    s = Swarm()
    for identity, model in ((b"q1", "qwen"), (b"l1", "llama")):
        s.registry.add(identity, b"generate",
                       WorkerProfile(name=identity.decode(), node_id=identity.decode(), model=model),
                       False, 0.0)
    s.registry.get(b"q1").job = ("elsewhere", 0)  # the one qwen slot is busy
    for _ in range(200):
        s.submit(model="qwen", candidates=1)
    checks = []
    real = scheduler.Need.met_by
    monkeypatch.setattr(scheduler.Need, "met_by", lambda need, slot: checks.append(1) or real(need, slot))
    s.submit(model="llama", candidates=1)  # one dispatch pass over all 201 queued jobs
    assert len(checks) < 20  # a few per need, not a few per queued job
    # and the policy is the same: the llama job took the idle slot, every qwen job waits
    assert s.registry.get(b"l1").job is not None
    assert len(s.service.jobs) == 201 and len(s.service.rotation) == 200
