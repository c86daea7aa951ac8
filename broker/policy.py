"""The `generate` service's knobs: per-peer timeouts, retries and how much it takes on."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.registry import Slot

MAX_ATTEMPTS = 2  # a failed candidate may be re-dispatched once elsewhere
CANCEL_GRACE_S = 10.0  # a slot told to stop has this long to send its FINAL, then DISCONNECT
MAX_TEXT_CHARS = 4 * 1024 * 1024  # one candidate's streamed text; beyond it the peer is wrong
MAX_JOBS = 1000
MAX_JOB_CANDIDATES = 16384  # of all jobs in flight together


@dataclass(slots=True)
class TimeoutPolicy:
    """Per-peer timeouts: peer override > worker hint > broker default."""

    default_s: float = 60.0
    first_token_s: float | None = None
    overrides: dict[str, float] = field(default_factory=dict)

    def total_s(self, slot: Slot) -> float:
        return self.overrides.get(slot.peer) or slot.profile.timeout_s or self.default_s


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the broker takes on before it answers "busy"."""

    max_jobs: int = MAX_JOBS
    max_candidates: int = MAX_JOB_CANDIDATES
