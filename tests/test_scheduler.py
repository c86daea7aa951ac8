"""broker/scheduler.py and broker/registry.py: slot choice and liveness, no sockets."""

from __future__ import annotations

from collections import Counter

import pytest

from broker import scheduler
from broker.registry import Registry
from common.profile import WorkerProfile

pytestmark = pytest.mark.timeout(10)

GEN = b"generate"


def registry_with(*slots: tuple[bytes, str, bool], now: float = 0.0) -> Registry:
    """slots: (identity, node id, seed_variation)."""
    reg = Registry(interval_s=1.0, liveness=3)
    for identity, node, seed_variation in slots:
        reg.add(identity, GEN, WorkerProfile(name=node, node_id=node, seed_variation=seed_variation),
                False, now)
    return reg


def test_pick_prefers_a_node_with_fewer_candidates_of_the_job():
    # Given node A already runs one candidate of this job, on its other slot
    reg = registry_with((b"a1", "A", True), (b"a2", "A", True), (b"b1", "B", True))
    slot = scheduler.pick(reg.idle(GEN), {b"a1"}, Counter({"A": 1}))
    assert slot.identity == b"b1"


def test_node_spread_outranks_slot_reuse():
    # Given node A runs two candidates (a3 is its free slot) and node B one, on b1
    reg = registry_with((b"a3", "A", True), (b"b1", "B", True))
    slot = scheduler.pick(reg.idle(GEN), {b"a1", b"a2", b"b1"}, Counter({"A": 2, "B": 1}))
    assert slot.identity == b"b1"


def test_pick_prefers_an_unused_slot_then_the_one_idle_longest():
    reg = registry_with((b"s1", "A", True), (b"s2", "A", True), (b"s3", "A", True))
    reg.get(b"s2").assigned_at, reg.get(b"s3").assigned_at = 5.0, 1.0
    assert scheduler.pick(reg.idle(GEN), {b"s1"}, Counter({"A": 1})).identity == b"s3"


def test_pick_never_reuses_a_slot_without_seed_variation():
    reg = registry_with((b"s1", "A", False))
    assert scheduler.pick(reg.idle(GEN), {b"s1"}, Counter({"A": 1})) is None
    assert scheduler.pick(reg.idle(GEN), set(), Counter()).identity == b"s1"


def test_pick_may_reuse_a_slot_with_seed_variation():
    reg = registry_with((b"s1", "A", True))
    assert scheduler.pick(reg.idle(GEN), {b"s1"}, Counter({"A": 1})).identity == b"s1"


def test_pick_avoids_slots_in_avoid_even_when_they_are_the_only_ones():
    reg = registry_with((b"s1", "A", True), (b"s2", "B", True))
    assert scheduler.pick(reg.idle(GEN), set(), Counter(), avoid={b"s1"}).identity == b"s2"
    assert scheduler.pick(reg.idle(GEN), set(), Counter(), avoid={b"s1", b"s2"}) is None


def test_placeable_counts_busy_slots_but_not_used_or_avoided_ones():
    reg = registry_with((b"s1", "A", False), (b"s2", "B", True))
    reg.get(b"s1").job = ("job", 0)
    serving = reg.serving(GEN)
    assert scheduler.placeable(serving, set())                        # s1 is busy, but live
    assert not scheduler.placeable(serving, {b"s1"}, avoid={b"s2"})
    assert scheduler.placeable(serving, {b"s1", b"s2"})               # s2 allows a second seed
    assert not scheduler.placeable([], set())


def test_registry_expiry_is_interval_times_liveness():
    reg = Registry(interval_s=0.5, liveness=4)
    slot = reg.add(b"w", GEN, WorkerProfile(name="w"), True, now=10.0)
    assert reg.expiry_s == 2.0 and slot.expires_at == 12.0
    assert (slot.delimited, slot.idle, slot.node, slot.peer) == (True, True, "w", "w")
    assert b"w" in reg and len(reg) == 1


def test_registry_touch_extends_life_and_purge_removes_silent_slots():
    reg = registry_with((b"s1", "A", False), (b"s2", "B", False), now=0.0)
    reg.touch(b"s1", now=2.0)
    reg.touch(b"unknown", now=2.0)  # ignored
    assert reg.purge(now=2.9) == []
    dead = reg.purge(now=3.0)
    assert [s.identity for s in dead] == [b"s2"]
    assert reg.get(b"s2") is None and len(reg) == 1
    assert [s.identity for s in reg.purge(now=5.0)] == [b"s1"]


def test_registry_idle_and_serving_filter_by_service_and_job():
    reg = registry_with((b"s1", "A", False), (b"s2", "B", False))
    reg.add(b"e1", b"echo", WorkerProfile(name="E"), False, 0.0)
    reg.get(b"s1").job = ("job", 0)
    assert {s.identity for s in reg.serving(GEN)} == {b"s1", b"s2"}
    assert [s.identity for s in reg.idle(GEN)] == [b"s2"]
    assert [s.identity for s in reg.idle(b"echo")] == [b"e1"]
    assert reg.remove(b"s1").identity == b"s1" and reg.remove(b"s1") is None
    assert len(reg.all()) == 2


def test_slot_node_falls_back_to_the_peer_name():
    reg = Registry(1.0, 3)
    slot = reg.add(b"x", GEN, WorkerProfile(name="laptop"), False, 0.0)
    assert slot.node == "laptop"


def test_registry_knows_the_shortest_announced_heartbeat_as_slots_come_and_go():
    reg = Registry(interval_s=1.0, liveness=3)
    assert reg.shortest_interval_s() == 1.0
    reg.add(b"fast", b"generate", WorkerProfile(name="f", heartbeat_s=0.1), False, 0.0)
    slow = reg.add(b"slow", b"generate", WorkerProfile(name="s", heartbeat_s=2.0), False, 0.0)
    assert reg.shortest_interval_s() == 0.1 and slow.expiry_s == 6.0
    reg.remove(b"fast")
    assert reg.shortest_interval_s() == 2.0
    assert [s.identity for s in reg.purge(6.0)] == [b"slow"]
    assert reg.shortest_interval_s() == 1.0


def model_registry(*slots: tuple[bytes, str, int]) -> Registry:
    """slots: (identity, model, n_ctx), each on its own node."""
    reg = Registry(interval_s=1.0, liveness=3)
    for identity, model, n_ctx in slots:
        name = identity.decode()
        reg.add(identity, GEN, WorkerProfile(name=name, node_id=name, model=model, n_ctx=n_ctx),
                False, 0.0)
    return reg


def test_a_model_name_picks_only_the_slots_serving_that_model():
    reg = model_registry((b"q1", "qwen", 0), (b"l1", "llama", 0))
    want = scheduler.Need(model="llama")
    assert scheduler.pick(reg.idle(GEN), set(), Counter(), need=want).identity == b"l1"
    assert not scheduler.placeable(reg.serving(GEN), set(), {b"l1"}, want)
    assert scheduler.pick(reg.idle(GEN), set(), Counter(), need=scheduler.Need("gemma")) is None


@pytest.mark.parametrize("model", [None, "swarm"])
def test_no_model_or_swarm_means_any_slot(model):
    reg = model_registry((b"q1", "qwen", 0), (b"l1", "llama", 0))
    want = scheduler.Need(model=model)
    assert scheduler.pick(reg.idle(GEN), set(), Counter(), {b"q1"}, want).identity == b"l1"
    assert scheduler.pick(reg.idle(GEN), set(), Counter(), {b"l1"}, want).identity == b"q1"


def test_after_a_context_overflow_only_larger_or_unknown_contexts_are_chances():
    # Given slots with contexts 2048, 4096, 8192 and one that did not say
    reg = model_registry((b"c2k", "m", 2048), (b"c4k", "m", 4096), (b"c8k", "m", 8192),
                         (b"c0", "m", 0))
    want = scheduler.Need(ctx_over=4096)
    options = {s.identity for s in reg.idle(GEN) if scheduler.eligible(s, set(), set(), want)}
    assert options == {b"c8k", b"c0"}
    assert not scheduler.placeable(reg.serving(GEN), set(), {b"c8k", b"c0"}, want)


def test_registry_lists_the_live_models_of_a_service():
    reg = model_registry((b"q1", "qwen", 0), (b"q2", "qwen", 0), (b"l1", "llama", 0))
    reg.add(b"anon", GEN, WorkerProfile(name="anon"), False, 0.0)  # said no model
    reg.add(b"echo", b"echo", WorkerProfile(name="echo", model="echo-model"), False, 0.0)
    assert reg.models(GEN) == {"qwen", "llama"}
    reg.remove(b"l1")
    assert reg.models(GEN) == {"qwen"}
