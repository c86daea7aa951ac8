"""Plain MDP routing: any service other than the broker's own goes to one worker slot.

Requests wait in a per-service queue for an idle slot (least recently used first) and
expire after the broker's timeout; a slot's PARTIAL/FINAL replies go to its client as-is,
in any number of frames (bounded by size, not count). A slot that does not answer within
the timeout is handed back to the server to disconnect: plain MDP has no CANCEL, and a
worker must not hold its slot forever. What waits is bounded (MAX_QUEUED requests,
MAX_QUEUED_BYTES of bodies, all services together): beyond it a request is answered "busy"
at once, so a client that floods requests cannot grow the broker without bound.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from broker.outbox import Outbox
from broker.registry import Registry, Slot
from common.frames import SERVICE_GENERATE
from common.messages import ClientReply, WorkerReply, WorkerRequest

log = logging.getLogger(__name__)

MAX_QUEUED = 1000                        # plain requests waiting for a slot
MAX_QUEUED_BYTES = 256 * 1024 * 1024     # their bodies together


@dataclass(slots=True)
class PlainWork:
    client: bytes
    delimited: bool
    service: bytes
    body: tuple[bytes, ...]
    expires_at: float            # queued: give up waiting for a slot; running: for the answer


class Router:
    def __init__(self, registry: Registry, outbox: Outbox, timeout_s: float):
        self.registry, self.outbox, self.timeout_s = registry, outbox, timeout_s
        self.queues: dict[bytes, deque[PlainWork]] = {}
        self.queued = self.queued_bytes = 0  # what waits in `queues`
        self.stats = {"busy": 0}

    def submit(self, client: bytes, delimited: bool, service: bytes, body: tuple[bytes, ...],
               now: float) -> None:
        if not self.registry.has(service):
            self.outbox.error(client, delimited, service,
                              f"no worker offers the service '{service.decode()}'")
            return
        size = sum(len(f) for f in body)
        if self.queued >= MAX_QUEUED or self.queued_bytes + size > MAX_QUEUED_BYTES:
            self.stats["busy"] += 1
            self.outbox.error(client, delimited, service, f"the broker is busy ({self.queued} "
                              "requests waiting for a worker): try again shortly")
            return
        work = PlainWork(client, delimited, service, body, now + self.timeout_s)
        self.queues.setdefault(service, deque()).append(work)
        self._count(work, 1)
        self.dispatch(now)

    def _count(self, work: PlainWork, sign: int) -> None:
        self.queued += sign
        self.queued_bytes += sign * sum(len(f) for f in work.body)

    def dispatch(self, now: float) -> None:
        for service, queue in self.queues.items():
            idle = sorted(self.registry.idle(service), key=lambda s: s.assigned_at)
            while queue and idle:
                slot, work = idle.pop(0), queue.popleft()
                self._count(work, -1)
                slot.job, slot.assigned_at = work, now
                work.expires_at = now + self.timeout_s
                self.outbox.send(slot.identity, slot.delimited, WorkerRequest(work.client, work.body))

    def on_reply(self, slot: Slot, reply: WorkerReply, now: float) -> None:
        work: PlainWork = slot.job
        if reply.final:
            slot.job = None
        self.outbox.send(work.client, work.delimited, ClientReply(work.service, reply.body, reply.final),
                         droppable=not reply.final)
        if reply.final:
            self.dispatch(now)

    def on_slot_lost(self, slot: Slot, reason: str, now: float) -> None:
        work, slot.job = slot.job, None
        if work is not None:
            self.outbox.error(work.client, work.delimited, work.service, f"{slot.peer} {reason}")

    def client_gone(self, client: bytes) -> None:
        """Forget the queued requests of a client that went away."""
        for service, queue in self.queues.items():
            for work in [w for w in queue if w.client == client]:
                self._count(work, -1)
            self.queues[service] = deque(w for w in queue if w.client != client)

    def tick(self, now: float) -> list[Slot]:
        """Expire queued requests; returns the slots whose answer is overdue."""
        for service, queue in self.queues.items():
            while queue and queue[0].expires_at <= now:
                work = queue.popleft()
                self._count(work, -1)
                self.outbox.error(work.client, work.delimited, service,
                                  f"no worker for '{service.decode()}' became free in time")
            if queue and not self.registry.has(service):
                for work in queue:
                    self._count(work, -1)
                    self.outbox.error(work.client, work.delimited, service,
                                      f"no worker offers the service '{service.decode()}'")
                queue.clear()
        self.queues = {s: q for s, q in self.queues.items() if q}  # no service names pile up
        self.dispatch(now)
        return [s for service in self.registry.services() if service != SERVICE_GENERATE
                for s in self.registry.serving(service)  # generate slots are never ours
                if isinstance(s.job, PlainWork) and s.job.expires_at <= now]

