"""One connection of a worker slot to a broker: its liveness arithmetic and its sends.

Apart from the session because it is the part that keeps time, not the part that decides:
when the broker counts as silent (`heartbeat_s * liveness` without a word), when a
heartbeat is due, whether the broker took the connection on, and the request in flight on
it. `send` is the one way a slot sends: now or not at all, never waiting.
"""

from __future__ import annotations

import asyncio
import time

import zmq
import zmq.asyncio

from worker.generation import Work

RETRY_S = 0.005  # how soon a FINAL the broker could not take yet is sent again


class Link:
    """One connection's liveness arithmetic and the request in flight on it."""

    def __init__(self, heartbeat_s: float, liveness: int):
        self.heartbeat_s = heartbeat_s
        self.expiry_s = heartbeat_s * liveness
        self.queue: asyncio.Queue = asyncio.Queue()  # (work, Chunk | Outcome, final) from the thread
        self.work: Work | None = None
        self.heard = False     # the broker said anything at all
        self.accepted = False  # the broker sent a HEARTBEAT or a REQUEST: it took us on
        self.dropped = 0       # PARTIALs the broker could not take
        self.unsent: list[bytes] | None = None  # a FINAL waiting for room on the connection
        now = time.monotonic()
        self.started = now
        self.expires_at, self.next_beat = now + self.expiry_s, now + heartbeat_s

    def wait_s(self) -> float:
        wait = max(0.0, min(self.next_beat, self.expires_at) - time.monotonic())
        return min(wait, RETRY_S) if self.unsent is not None else wait

    def heard_now(self) -> None:
        self.heard = True
        self.expires_at = time.monotonic() + self.expiry_s

    def sent_now(self) -> None:
        self.next_beat = time.monotonic() + self.heartbeat_s

    def broker_silent(self) -> bool:
        return time.monotonic() >= self.expires_at

    def beat_due(self) -> bool:
        return time.monotonic() >= self.next_beat

    def was_accepted(self) -> bool:
        """Whether a broker took this connection on: it said so, or kept it for a liveness."""
        return self.accepted or (self.heard and time.monotonic() - self.started >= self.expiry_s)


def send(sock: zmq.asyncio.Socket, frames: list[bytes]) -> bool:
    """Send now or not at all: False when the connection cannot take it (gone, or full)."""
    sent = sock.send_multipart(frames, zmq.NOBLOCK)  # a future that is already done
    try:
        sent.result()
    except zmq.Again:
        return False
    return True
