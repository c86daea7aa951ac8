"""The cancel grace, driven purely: a slot told to stop that is still on its candidate when
the grace runs out is handed back for DISCONNECT and counted; one that stopped is not."""

from __future__ import annotations

import pytest

from common.messages import Cancel
from tests import generate_util
from tests.generate_util import CLIENT

pytestmark = pytest.mark.timeout(10)

GRACE_S = 2.0


class Swarm(generate_util.Swarm):
    """One candidate a job, on slots named as their identity that hear CANCEL unless told."""

    def __init__(self, peer_timeout_s: float = 60.0):
        super().__init__(peer_timeout_s, cancel_grace_s=GRACE_S)

    def add(self, identity: bytes, cancel: bool = True) -> None:
        super().add(identity, seed_variation=True, cancel=cancel, name=identity.decode())

    def submit(self, now: float, **body) -> None:
        super().submit(now, **{"candidates": 1, **body})

    def final(self, identity: bytes, now: float) -> None:
        self.reply(identity, now, finish="cancelled")


def told_to_stop(identity: bytes, at: float = 1.0, cancel: bool = True) -> Swarm:
    """A slot on the one candidate of a job from t=0, which its client cancels `at`."""
    s = Swarm()
    s.add(identity, cancel=cancel)
    s.submit(0.0)
    s.service.cancel_client(CLIENT, at)
    return s


def cancels(sent) -> list[bytes]:
    return [ident for ident, msg in sent if isinstance(msg, Cancel)]


def test_a_slot_that_goes_on_past_the_grace_is_handed_back_and_counted():
    # Given a job whose one candidate runs on a slot that hears CANCEL
    s = Swarm()
    s.add(b"rude")
    s.submit(0.0)
    # When the client cancels the job at t=1
    assert s.service.cancel_client(CLIENT, 1.0) == 1
    assert cancels(s.sent()) == [b"rude"]
    # Then the slot stays busy through the grace, and is handed back when it runs out
    assert s.service.tick(1.0 + GRACE_S - 0.01) == []
    overdue = s.service.tick(1.0 + GRACE_S)
    assert [slot.identity for slot in overdue] == [b"rude"]
    assert s.metrics.peer("rude").cancel_ignored == 1
    assert s.service.tick(100.0) == []  # once only


def test_a_slot_that_sends_its_final_within_the_grace_is_left_alone():
    s = told_to_stop(b"polite")
    s.final(b"polite", 1.5)
    assert s.registry.get(b"polite").idle
    assert s.service.tick(1.0 + GRACE_S) == []
    assert s.metrics.peer("polite").cancel_ignored == 0


def test_a_slot_that_stopped_and_took_new_work_is_not_blamed_for_the_old_cancel():
    # Given a slot told to stop, which stops and takes the next job at once
    s = told_to_stop(b"busy")
    s.final(b"busy", 1.2)
    s.submit(1.3)
    assert not s.registry.get(b"busy").idle
    # When the first CANCEL's grace runs out, the slot works on the new job: no DISCONNECT
    assert s.service.tick(1.0 + GRACE_S) == []
    assert s.metrics.peer("busy").cancel_ignored == 0


def test_a_peer_timeout_cancels_and_arms_the_grace_too():
    # Given a slot whose candidate times out (the peer's own timeout, 5 s)
    s = Swarm(peer_timeout_s=5.0)
    s.add(b"slow")
    s.submit(0.0, timeout_s=600)
    s.sent()
    assert s.service.tick(5.0) == []
    assert cancels(s.sent()) == [b"slow"]
    # Then it is handed back one grace later if it is still on that candidate
    assert [slot.peer for slot in s.service.tick(5.0 + GRACE_S)] == ["slow"]


def test_a_slot_that_cannot_hear_cancel_gets_no_cancel_and_no_grace():
    s = told_to_stop(b"strict", cancel=False)
    assert cancels(s.sent()) == []
    assert s.service.tick(1.0 + GRACE_S) == []


def test_a_grace_outlives_its_job_when_timers_of_ended_jobs_are_pruned():
    # Given a rude slot told to stop, whose job has ended (so its grace outlives the job)
    s = told_to_stop(b"rude", at=0.5)
    assert cancels(s.sent()) == [b"rude"]
    s.add(b"polite")
    # When thousands of jobs end on the other slot before the grace runs out, so the timers
    # of ended jobs are pruned
    for i in range(3000):
        s.submit(1.0)
        s.final(b"polite", 1.0)
        s.service.tick(1.0)
        s.sent()
    # Then the grace still fires for the slot that went on working
    assert [slot.identity for slot in s.service.tick(0.5 + GRACE_S)] == [b"rude"]
