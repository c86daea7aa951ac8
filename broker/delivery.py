"""Delivery with back-pressure: pure bookkeeping around a non-blocking send.

The ROUTER runs with ROUTER_MANDATORY, so a send to a peer whose queue is full says so
(FULL) instead of dropping the message silently, and a send to a peer that has gone says
that (GONE). A peer that is FULL gets a backlog that keeps the order of its messages and
is retried on every pass; while it is backed up, droppable messages (progress events,
heartbeats) join the backlog only within a byte budget and are shed beyond it, counted.
A message that is not droppable (a FINAL) waits in the backlog until it is sent or its
peer is gone, up to `max_kept` of them: a peer that left that many unread (no client has
that many jobs; a stranger that floods requests and never reads does) is cut off as if gone,
counted (`overflowed`), so no peer can grow the broker without bound.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

from broker.outbox import Envelope, Frames

DEFAULT_BACKLOG_BYTES = 32 * 1024 * 1024  # per peer, for droppable messages
DEFAULT_MAX_KEPT = 4096                   # per peer, ones never dropped; beyond it: cut off


class Sent(enum.Enum):
    OK = "ok"
    FULL = "full"
    GONE = "gone"


class Delivery:
    def __init__(self, send: Callable[[Frames], Sent], backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
                 max_kept: int = DEFAULT_MAX_KEPT):
        self._send = send
        self.backlog_bytes, self.max_kept = backlog_bytes, max_kept
        self._backlog: dict[bytes, deque[Envelope]] = {}
        self._bytes: dict[bytes, int] = {}
        self._kept: dict[bytes, int] = {}  # messages in a backlog that are not droppable
        self.stats = {"sent": 0, "shed": 0, "backlogged": 0, "undeliverable": 0,
                      "overflowed": 0}

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._backlog.values())

    def push(self, env: Envelope) -> bytes | None:
        """Send now or keep in order for later; returns the peer's identity if it is gone."""
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
            self._bytes[identity] = self._kept[identity] = 0
        return self._keep(identity, queue, env)

    def _keep(self, identity: bytes, queue: deque[Envelope], env: Envelope) -> bytes | None:
        size = sum(len(f) for f in env.frames)
        if env.droppable and self._bytes[identity] + size > self.backlog_bytes:
            self.stats["shed"] += 1
            return None
        if not env.droppable and self._kept[identity] >= self.max_kept:
            self.stats["overflowed"] += 1
            self.stats["undeliverable"] += 1 + len(queue)
            self._forget(identity)
            return identity  # it does not read: as good as gone
        queue.append(env)
        self._bytes[identity] += size
        self._kept[identity] += not env.droppable
        self.stats["backlogged"] += 1
        return None

    def _forget(self, identity: bytes) -> None:
        del self._backlog[identity], self._bytes[identity], self._kept[identity]

    def retry(self) -> list[bytes]:
        """Send what the backlogs can take now; returns the identities found gone."""
        gone = []
        for identity, queue in list(self._backlog.items()):
            while queue:
                result = self._send(queue[0].frames)
                if result is Sent.FULL:
                    break
                env = queue.popleft()
                self._bytes[identity] -= sum(len(f) for f in env.frames)
                self._kept[identity] -= not env.droppable
                if result is Sent.GONE:
                    self.stats["undeliverable"] += 1 + len(queue)
                    queue.clear()
                    gone.append(identity)
                else:
                    self.stats["sent"] += 1
            if not queue:
                self._forget(identity)
        return gone
