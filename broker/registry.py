"""Worker slots and their liveness: pure state, no sockets.

A slot is one MDP worker connection (one DEALER, one model instance). Slots of one
`swarm-worker` process share a node id; the profile's name is the peer people see.
Liveness is visible arithmetic: a slot expires `interval_s * liveness` after it last spoke,
where the interval is the one the worker announces in its profile (so a worker started
with another --heartbeat-s than the broker's is judged, and sent heartbeats, at its own
pace), else the broker's.

Costs follow what changed, not how many slots there are: the registry keeps each
service's slots and idle slots (a slot's `job` setter tells it when the slot takes or ends
work) and the models they have loaded, counted; heartbeats and expiries wait in heaps, so
a pass of the loop looks only at the slots that are due.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from common.profile import WorkerProfile


@dataclass(slots=True)
class Slot:
    identity: bytes
    service: bytes
    profile: WorkerProfile
    delimited: bool              # the peer frames with an empty delimiter (REQ-style)
    expires_at: float
    heartbeat_s: float = 1.0     # the interval this worker beats at and expects beats
    expiry_s: float = 3.0        # silence after which it is dead: heartbeat_s * liveness
    next_beat: float = 0.0       # when the broker owes it a heartbeat
    anonymous: bool = False      # a strict MDP worker with no profile: named by its identity
    assigned_at: float = 0.0     # when it last took work, for least-recently-used order
    _job: Any = None             # `job`: what it works on, (job id, cand) or a PlainWork
    # its service's idle slots, while it is registered (the registry's index)
    _idle_in: dict | None = field(default=None, repr=False, compare=False)

    @property
    def job(self) -> Any:
        return self._job

    @job.setter
    def job(self, work: Any) -> None:
        """Take (or, with None, end) work; the registry's idle index follows."""
        self._job = work
        if self._idle_in is not None:
            if work is None:
                self._idle_in[self.identity] = self
            else:
                self._idle_in.pop(self.identity, None)

    @property
    def node(self) -> str:
        return self.profile.node_id or self.profile.name

    @property
    def peer(self) -> str:
        return self.profile.name

    @property
    def idle(self) -> bool:
        return self.job is None


class Registry:
    def __init__(self, interval_s: float, liveness: int):
        self.interval_s, self.liveness = interval_s, liveness
        self.expiry_s = interval_s * liveness
        self._slots: dict[bytes, Slot] = {}
        self._intervals: Counter[float] = Counter()  # slots per announced heartbeat interval
        self._serving: dict[bytes, dict[bytes, Slot]] = {}  # service -> its slots
        self._idle: dict[bytes, dict[bytes, Slot]] = {}     # service -> its idle slots
        self._models: dict[bytes, Counter[str]] = {}        # service -> slots per model
        self._beats: list[tuple[float, int, Slot]] = []     # (next beat, order, slot)
        self._expiries: list[tuple[float, int, Slot]] = []  # (expiry or earlier, order, slot)
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, identity: bytes) -> bool:
        return identity in self._slots

    def get(self, identity: bytes) -> Slot | None:
        return self._slots.get(identity)

    def add(self, identity: bytes, service: bytes, profile: WorkerProfile,
            delimited: bool, now: float, anonymous: bool = False) -> Slot:
        interval_s = profile.heartbeat_s or self.interval_s
        expiry_s = interval_s * self.liveness
        slot = Slot(identity, service, profile, delimited, now + expiry_s, interval_s, expiry_s,
                    now + interval_s, anonymous)
        self.remove(identity)  # the same identity again: the old slot is gone
        self._slots[identity] = slot
        self._intervals[interval_s] += 1
        self._serving.setdefault(service, {})[identity] = slot
        slot._idle_in = self._idle.setdefault(service, {})
        slot._idle_in[identity] = slot
        if profile.model:
            self._models.setdefault(service, Counter())[profile.model] += 1
        heapq.heappush(self._beats, (slot.next_beat, next(self._order), slot))
        heapq.heappush(self._expiries, (slot.expires_at, next(self._order), slot))
        return slot

    def touch(self, identity: bytes, now: float) -> None:
        slot = self._slots.get(identity)
        if slot is not None:
            slot.expires_at = now + slot.expiry_s

    def beats_due(self, now: float) -> list[Slot]:
        """Slots owed a heartbeat now; each is then due again one interval later."""
        due = []
        while self._beats and self._beats[0][0] <= now:
            _, _, slot = heapq.heappop(self._beats)
            if self._slots.get(slot.identity) is not slot:
                continue  # gone since
            due.append(slot)
            slot.next_beat = now + slot.heartbeat_s
            heapq.heappush(self._beats, (slot.next_beat, next(self._order), slot))
        return due

    def shortest_interval_s(self) -> float:
        """The shortest heartbeat interval of any slot (the broker's own without slots)."""
        return min(self._intervals, default=self.interval_s)

    def _forget(self, slot: Slot) -> None:
        """Out of every index (its heap entries are skipped when they come due)."""
        _decrement(self._intervals, slot.heartbeat_s)
        service = slot.service
        del self._serving[service][slot.identity]
        self._idle[service].pop(slot.identity, None)
        slot._idle_in = None
        if not self._serving[service]:
            del self._serving[service], self._idle[service]
        if slot.profile.model:
            _decrement(self._models[service], slot.profile.model)
            if not self._models[service]:
                del self._models[service]

    def names(self) -> set[str]:
        return {s.peer for s in self._slots.values()}

    def anonymous(self) -> set[str]:
        """Peers named after a socket identity (strict MDP workers): gone for good once gone."""
        return {s.peer for s in self._slots.values() if s.anonymous}

    def holder(self, name: str) -> Slot | None:
        """A live slot that goes by this peer name."""
        return next((s for s in self._slots.values() if s.peer == name), None)

    def remove(self, identity: bytes) -> Slot | None:
        slot = self._slots.pop(identity, None)
        if slot is not None:
            self._forget(slot)
        return slot

    def purge(self, now: float) -> list[Slot]:
        """Remove and return every slot that has been silent past its expiry. A heap entry
        is a slot's expiry when it was pushed; a slot heard from since goes back in at its
        later one, so each slot costs a push per expiry interval, not one per message."""
        dead = []
        while self._expiries and self._expiries[0][0] <= now:
            _, _, slot = heapq.heappop(self._expiries)
            if self._slots.get(slot.identity) is not slot:
                continue
            if slot.expires_at > now:
                heapq.heappush(self._expiries, (slot.expires_at, next(self._order), slot))
                continue
            del self._slots[slot.identity]
            self._forget(slot)
            dead.append(slot)
        return dead

    def all(self) -> list[Slot]:
        return list(self._slots.values())

    def serving(self, service: bytes) -> list[Slot]:
        return list(self._serving.get(service, {}).values())

    def services(self) -> list[bytes]:
        """The services live slots offer."""
        return list(self._serving)

    def has(self, service: bytes) -> bool:
        """Does any live slot serve this service?"""
        return service in self._serving

    def models(self, service: bytes) -> set[str]:
        """The models live slots of this service have loaded (those that said which)."""
        return set(self._models.get(service, ()))

    def idle(self, service: bytes) -> list[Slot]:
        return list(self._idle.get(service, {}).values())


def _decrement(counts: Counter, key) -> None:
    counts[key] -= 1
    if not counts[key]:
        del counts[key]
