"""broker/delivery.py: back-pressure without blocking, without losing a FINAL."""

from __future__ import annotations

import pytest

from broker.delivery import ENVELOPE_COST, Delivery, Sent
from broker.outbox import Envelope

pytestmark = pytest.mark.timeout(10)


class Peer:
    """A fake ROUTER send: each peer takes `room` more messages, or is gone."""

    def __init__(self) -> None:
        self.room: dict[bytes, int] = {}
        self.gone: set[bytes] = set()
        self.got: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> Sent:
        if frames[0] in self.gone:
            return Sent.GONE
        if self.room.get(frames[0], 10**9) <= 0:
            return Sent.FULL
        self.room[frames[0]] = self.room.get(frames[0], 10**9) - 1
        self.got.append(frames)
        return Sent.OK


def env(peer: bytes, text: str, droppable: bool = False) -> Envelope:
    return Envelope([peer, text.encode()], droppable)


def test_a_full_peer_keeps_its_messages_in_order_and_gets_them_when_it_reads():
    peer = Peer()
    d = Delivery(peer.send)
    peer.room[b"c"] = 1
    for text in ("a", "b", "c"):
        assert d.push(env(b"c", text)) is None
    assert [f[1] for f in peer.got] == [b"a"] and d.pending == 2
    peer.room[b"c"] = 10
    assert d.retry() == []
    assert [f[1] for f in peer.got] == [b"a", b"b", b"c"] and d.pending == 0


def test_progress_beyond_the_budget_is_shed_but_a_final_always_waits():
    peer = Peer()
    d = Delivery(peer.send, backlog_bytes=2 * (ENVELOPE_COST + 5))
    peer.room[b"c"] = 0
    for i in range(5):
        d.push(env(b"c", f"tok{i}", droppable=True))  # 5 bytes each, and the envelope
    d.push(env(b"c", "FINAL" * 100))
    assert d.stats["shed"] == 3 and d.pending == 3
    peer.room[b"c"] = 10
    d.retry()
    assert [f[1] for f in peer.got] == [b"tok0", b"tok1", b"FINAL" * 100]


def test_one_slow_peer_does_not_hold_up_another():
    peer = Peer()
    d = Delivery(peer.send)
    peer.room[b"slow"] = 0
    d.push(env(b"slow", "x"))
    d.push(env(b"fast", "y"))
    assert [f[0] for f in peer.got] == [b"fast"]


def test_a_gone_peer_is_reported_and_its_backlog_dropped():
    peer = Peer()
    d = Delivery(peer.send)
    peer.gone.add(b"g")
    assert d.push(env(b"g", "x")) == b"g"
    peer.gone.clear()
    peer.room[b"h"] = 0
    d.push(env(b"h", "a"))
    d.push(env(b"h", "b"))
    peer.gone.add(b"h")
    assert d.retry() == [b"h"]
    assert d.pending == 0 and d.stats["undeliverable"] == 3
