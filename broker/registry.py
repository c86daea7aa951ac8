"""Worker slots and their liveness: pure state, no sockets.

A slot is one MDP worker connection (one DEALER, one model instance). Slots of one
`swarm-worker` process share a node id; the profile's name is the peer people see.
Liveness is visible arithmetic: a slot expires `interval_s * liveness` after it last spoke.
"""

from __future__ import annotations

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
    job: Any = None              # what it works on: (job id, cand) or a plain client address
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
        self.expiry_s = interval_s * liveness
        self._slots: dict[bytes, Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, identity: bytes) -> bool:
        return identity in self._slots

    def get(self, identity: bytes) -> Slot | None:
        return self._slots.get(identity)

    def add(self, identity: bytes, service: bytes, profile: WorkerProfile,
            delimited: bool, now: float) -> Slot:
        slot = Slot(identity, service, profile, delimited, now + self.expiry_s)
        self._slots[identity] = slot
        return slot

    def touch(self, identity: bytes, now: float) -> None:
        slot = self._slots.get(identity)
        if slot is not None:
            slot.expires_at = now + self.expiry_s

    def remove(self, identity: bytes) -> Slot | None:
        return self._slots.pop(identity, None)

    def purge(self, now: float) -> list[Slot]:
        """Remove and return every slot that has been silent past its expiry."""
        dead = [s for s in self._slots.values() if s.expires_at <= now]
        for s in dead:
            del self._slots[s.identity]
        return dead

    def all(self) -> list[Slot]:
        return list(self._slots.values())

    def serving(self, service: bytes) -> list[Slot]:
        return [s for s in self._slots.values() if s.service == service]

    def idle(self, service: bytes) -> list[Slot]:
        return [s for s in self._slots.values() if s.service == service and s.job is None]
