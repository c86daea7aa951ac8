"""Worker slots and their liveness: pure state, no sockets.

A slot is one MDP worker connection (one DEALER, one model instance). Slots of one
`swarm-worker` process share a node id; the profile's name is the peer people see.
Liveness is visible arithmetic: a slot expires `interval_s * liveness` after it last spoke,
where the interval is the one the worker announces in its profile (so a worker started
with another --heartbeat-s than the broker's is judged, and sent heartbeats, at its own
pace), else the broker's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
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
    job: Any = None              # what it works on: (job id, cand) or a PlainWork
    assigned_at: float = 0.0     # when it last took work, for least-recently-used order

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
        self._slots[identity] = slot
        self._intervals[interval_s] += 1
        return slot

    def touch(self, identity: bytes, now: float) -> None:
        slot = self._slots.get(identity)
        if slot is not None:
            slot.expires_at = now + slot.expiry_s

    def beats_due(self, now: float) -> list[Slot]:
        """Slots owed a heartbeat now; each is then due again one interval later."""
        due = [s for s in self._slots.values() if s.next_beat <= now]
        for s in due:
            s.next_beat = now + s.heartbeat_s
        return due

    def shortest_interval_s(self) -> float:
        """The shortest heartbeat interval of any slot (the broker's own without slots)."""
        return min(self._intervals, default=self.interval_s)

    def _forget(self, slot: Slot) -> None:
        self._intervals[slot.heartbeat_s] -= 1
        if not self._intervals[slot.heartbeat_s]:
            del self._intervals[slot.heartbeat_s]

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
        """Remove and return every slot that has been silent past its expiry."""
        dead = [s for s in self._slots.values() if s.expires_at <= now]
        for s in dead:
            del self._slots[s.identity]
            self._forget(s)
        return dead

    def all(self) -> list[Slot]:
        return list(self._slots.values())

    def serving(self, service: bytes) -> list[Slot]:
        return [s for s in self._slots.values() if s.service == service]

    def models(self, service: bytes) -> set[str]:
        """The models live slots of this service have loaded (those that said which)."""
        return {s.profile.model for s in self._slots.values()
                if s.service == service and s.profile.model}

    def idle(self, service: bytes) -> list[Slot]:
        return [s for s in self._slots.values() if s.service == service and s.job is None]
