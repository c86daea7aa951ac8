"""broker/delivery.py: what a peer that never reads can make the broker keep (issue 9).

The byte budgets count what a queued message really costs the broker, not only its frames,
and bound everything kept for a peer, FINALs included: a stranger that asks and asks and
never reads is cut off (its backlog dropped, counted) instead of growing the broker.
"""

from __future__ import annotations

import pytest

from broker.delivery import ENVELOPE_COST, RETRY_MAX_S, Delivery, Sent
from broker.outbox import Envelope
from tests.test_delivery import Peer

pytestmark = pytest.mark.timeout(10)


def final(peer: bytes, size: int) -> Envelope:
    return Envelope([peer, b"x" * size], False)


def token(peer: bytes) -> Envelope:
    return Envelope([peer, b"t"], True)


def test_tiny_progress_events_are_counted_at_what_they_cost():
    # Given a budget of 100 queued messages' worth and a peer that never reads
    peer = Peer()
    d = Delivery(peer.send, backlog_bytes=100 * ENVELOPE_COST)
    peer.room[b"c"] = 0
    # When 10,000 one-byte progress events come for it
    for _ in range(10_000):
        d.push(token(b"c"))
    # Then about a hundred are kept, the rest shed: a frame's bytes are not all they cost
    assert d.pending <= 100 and d.stats["shed"] >= 9_900


def test_a_peer_that_never_reads_cannot_grow_its_finals_without_bound():
    peer = Peer()
    d = Delivery(peer.send, backlog_bytes=10_000, hard_bytes=100_000)
    peer.room[b"c"] = 0
    # When 1,000 FINALs of 1 KB wait for a peer that reads nothing
    cut = {d.push(final(b"c", 1000)) for _ in range(1000)} - {None}
    # Then it is cut off (reported like a gone peer), what it had is dropped and counted,
    # and never more than the hard limit is kept for it
    assert cut == {b"c"}
    assert d.stats["cut_off"] >= 1 and d.stats["undeliverable"] >= 900
    assert d.pending * (1000 + ENVELOPE_COST) <= 100_000


def test_one_big_final_is_kept_even_over_the_hard_limit():
    peer = Peer()
    d = Delivery(peer.send, backlog_bytes=10, hard_bytes=1000)
    peer.room[b"c"] = 0
    assert d.push(final(b"c", 50_000)) is None
    assert d.pending == 1 and d.stats["cut_off"] == 0
    peer.room[b"c"] = 1
    d.retry()
    assert len(peer.got) == 1 and d.pending == 0


def test_many_slow_peers_together_stay_under_the_total():
    # Given 100 peers that never read, each under its own limits
    peer = Peer()
    d = Delivery(peer.send, backlog_bytes=50_000, hard_bytes=100_000, total_bytes=300_000)
    names = [f"p{i}".encode() for i in range(100)]
    for name in names:
        peer.room[name] = 0
    # When each gets progress events and FINALs
    cut = set()
    for _ in range(20):
        for name in names:
            d.push(token(name))
            cut.add(d.push(final(name, 1000)))
    # Then the largest backlogs are cut off once all together pass the total
    assert d.stats["cut_off"] > 0 and cut - {None} and d.stats["undeliverable"] > 0
    assert d.queued_bytes <= 300_000
    assert d.queued_bytes == sum(cost for cost in d._bytes.values())


def test_a_cut_off_peer_that_reads_again_gets_what_came_after():
    peer = Peer()
    d = Delivery(peer.send, backlog_bytes=10, hard_bytes=5000)
    peer.room[b"c"] = 0
    pushed = [d.push(final(b"c", 1000)) for _ in range(10)]
    assert b"c" in pushed
    d.push(Envelope([b"c", b"after"], False))
    peer.room[b"c"] = 100
    d.retry()
    assert peer.got[-1] == [b"c", b"after"] and d.pending == 0


def test_a_peer_that_takes_nothing_is_tried_ever_less_often_and_one_that_reads_soon_again():
    # Given a peer whose pipe is full, with a backlog
    tries: list[bytes] = []
    full = {b"mute", b"slow"}

    def send(frames):
        tries.append(frames[0])
        return Sent.FULL if frames[0] in full else Sent.OK

    d = Delivery(send)
    for peer in (b"mute", b"slow"):
        d.push(Envelope([peer, b"final"]))
    # When the loop passes every millisecond for a second, and "slow" reads after 0.1 s
    for ms in range(1000):
        if ms == 100:
            full.discard(b"slow")
        d.retry(ms / 1000)
    # Then the mute peer was tried a few dozen times, not a thousand
    assert 10 < tries.count(b"mute") < 40
    # And the slow one got its message once it read, and has no backlog left
    assert d.stats["sent"] == 1 and d.pending == 1
    # And the loop is told when the next try is due: at most the longest pause away
    assert 0 <= d.wait_s(1.0) <= RETRY_MAX_S


def test_without_a_backlog_nothing_is_due():
    d = Delivery(lambda frames: Sent.OK)
    d.push(Envelope([b"p", b"x"]))
    assert d.wait_s(0.0) is None and d.retry(0.0) == []
