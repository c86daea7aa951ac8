"""Delivery with back-pressure: pure bookkeeping around a non-blocking send.

The ROUTER runs with ROUTER_MANDATORY, so a send to a peer whose queue is full says so
(FULL) instead of dropping the message silently, and a send to a peer that has gone says
that (GONE). A peer that is FULL gets a backlog that keeps the order of its messages and
is retried soon while it takes something and ever less often (to RETRY_MAX_S) while it
takes nothing; while it is backed up, droppable messages (progress events,
heartbeats) join the backlog only within a byte budget and are shed beyond it, counted.
A message that is not droppable (a FINAL) waits in the backlog until it is sent or its
peer is gone, within a hard limit: a peer that lets more than that pile up (a stranger
that asks and never reads) is cut off, which is reported like a gone peer: its backlog
is dropped and counted, and its jobs end. All peers' backlogs together have a limit too;
past it the largest backlog is cut off. Every budget counts what a queued message costs
the broker (its frames and the objects around them), so it bounds the broker's memory.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable

from broker.outbox import Envelope, Frames
from common import logs

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_BACKLOG_BYTES = 32 * MiB   # per peer: droppable messages join a backlog below this
DEFAULT_HARD_BYTES = 64 * MiB      # per peer, everything: past it the peer is cut off
DEFAULT_TOTAL_BYTES = 256 * MiB    # all peers together: past it the largest is cut off
RETRY_MIN_S = 0.005  # a backed-up peer that takes something is tried again this soon
RETRY_MAX_S = 0.05   # one that takes nothing is tried ever less often, down to this pace
ENVELOPE_COST = 512  # what a queued message costs beyond its frames (measured: ~440 bytes)


class Sent(enum.Enum):
    OK = "ok"
    FULL = "full"
    GONE = "gone"


def cost(env: Envelope) -> int:
    return ENVELOPE_COST + sum(len(f) for f in env.frames)


class Delivery:
    def __init__(self, send: Callable[[Frames], Sent], backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
                 hard_bytes: int = DEFAULT_HARD_BYTES, total_bytes: int = DEFAULT_TOTAL_BYTES):
        self._send = send
        self.backlog_bytes, self.hard_bytes, self.total_bytes = backlog_bytes, hard_bytes, total_bytes
        self._backlog: dict[bytes, deque[Envelope]] = {}
        self._bytes: dict[bytes, int] = {}
        self.queued_bytes = 0  # all backlogs together
        self._pause: dict[bytes, float] = {}  # per backed-up peer: the pause before its next try
        self._due: dict[bytes, float] = {}    # and when that try is due
        self.stats = {"sent": 0, "shed": 0, "backlogged": 0, "undeliverable": 0, "cut_off": 0}

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._backlog.values())

    def push(self, env: Envelope) -> bytes | None:
        """Send now or keep in order for later; returns the identity of a peer found gone
        or cut off."""
        identity = env.frames[0]
        queue = self._backlog.get(identity)
        if queue is None:
            result = self._send(env.frames)
            if result is Sent.OK:
                self.stats["sent"] += 1
                return None
            if result is Sent.GONE:
                self.stats["undeliverable"] += 1
                return identity
            queue = self._backlog[identity] = deque()
            self._bytes[identity] = 0
            self._pause[identity], self._due[identity] = RETRY_MIN_S, 0.0
        return self._keep(identity, queue, env)

    def _keep(self, identity: bytes, queue: deque[Envelope], env: Envelope) -> bytes | None:
        size = cost(env)
        if env.droppable and (self._bytes[identity] + size > self.backlog_bytes or
                              self.queued_bytes + size > self.total_bytes):
            self.stats["shed"] += 1
            return None
        if queue and self._bytes[identity] + size > self.hard_bytes:
            self.stats["undeliverable"] += 1  # this one too: the peer starts over clean
            return self._cut(identity)
        queue.append(env)
        self._bytes[identity] += size
        self.queued_bytes += size
        self.stats["backlogged"] += 1
        if self.queued_bytes > self.total_bytes:
            return self._cut(max(self._bytes, key=self._bytes.__getitem__))
        return None

    def _cut(self, identity: bytes) -> bytes:
        """Drop all that waits for this peer; the caller treats it as gone."""
        queue = self._backlog.pop(identity)
        self.queued_bytes -= self._bytes.pop(identity)
        del self._pause[identity], self._due[identity]
        self.stats["undeliverable"] += len(queue)
        self.stats["cut_off"] += 1
        log.warning("a peer read nothing while %d messages waited for it: cut off, "
                    "its backlog dropped", len(queue), extra=logs.kv(identity=identity.hex()))
        return identity

    def wait_s(self, now: float) -> float | None:
        """How long until a backed-up peer is due another try; None without a backlog."""
        return max(0.0, min(self._due.values()) - now) if self._due else None

    def retry(self, now: float | None = None) -> list[bytes]:
        """Send what the backlogs due a try can take now (all of them without `now`);
        returns the identities found gone. A peer that took nothing is tried again after a
        pause that doubles up to RETRY_MAX_S, so one that never reads costs the loop ever
        less; one that took something is tried again soon."""
        gone = []
        for identity, queue in list(self._backlog.items()):
            if now is not None and self._due[identity] > now:
                continue
            took = self._drain(identity, queue, gone)
            if not queue:
                del self._backlog[identity], self._bytes[identity]
                del self._pause[identity], self._due[identity]
            elif now is not None:
                pause = RETRY_MIN_S if took else min(RETRY_MAX_S, self._pause[identity] * 2)
                self._pause[identity], self._due[identity] = pause, now + pause
        return gone

    def _drain(self, identity: bytes, queue: deque[Envelope], gone: list[bytes]) -> bool:
        """Send from the head of one backlog until the peer is full; True if it took any."""
        took = False
        while queue:
            result = self._send(queue[0].frames)
            if result is Sent.FULL:
                break
            env = queue.popleft()
            self._bytes[identity] -= cost(env)
            self.queued_bytes -= cost(env)
            if result is Sent.GONE:
                self.stats["undeliverable"] += 1 + len(queue)
                self.queued_bytes -= self._bytes[identity]
                self._bytes[identity] = 0
                queue.clear()
                gone.append(identity)
            else:
                self.stats["sent"] += 1
                took = True
        return took
