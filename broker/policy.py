"""The `generate` service's knobs: per-peer timeouts, retries and how much it takes on."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.adaptive import DEFAULT, HINT, LEARNED, OVERRIDE, Learning, Timeout
from broker.metrics import PeerMetrics
from broker.registry import Slot

MAX_ATTEMPTS = 2  # a failed candidate may be re-dispatched once elsewhere
CANCEL_GRACE_S = 10.0  # a slot told to stop has this long to send its FINAL, then DISCONNECT
MAX_TEXT_CHARS = 4 * 1024 * 1024  # one candidate's streamed text; beyond it the peer is wrong
MAX_JOBS = 1000
MAX_JOB_CANDIDATES = 16384  # of all jobs in flight together


@dataclass(slots=True)
class TimeoutPolicy:
    """Per-peer timeouts: peer override > worker hint > learned from the peer's history
    (broker/adaptive.py) > broker default. The job's own deadline bounds them all."""

    default_s: float = 60.0
    first_token_s: float | None = None
    overrides: dict[str, float] = field(default_factory=dict)
    learning: Learning = field(default_factory=Learning)

    def for_candidate(self, slot: Slot, max_tokens: int, metrics: PeerMetrics | None,
                      prompt_chars: int = 0) -> Timeout:
        """The timeout for a candidate of `max_tokens` after a prompt of `prompt_chars` on
        `slot`, and its source."""
        return self.for_peer(slot.peer, slot.profile.timeout_s, max_tokens, metrics, prompt_chars)

    def for_peer(self, peer: str, hint_s: float | None, max_tokens: int,
                 metrics: PeerMetrics | None, prompt_chars: int = 0) -> Timeout:
        if self.overrides.get(peer):
            return Timeout(self.overrides[peer], OVERRIDE)
        if hint_s:
            return Timeout(hint_s, HINT)
        learned = None if metrics is None else self.learning.learned_s(
            metrics.ttfts, metrics.rates, max_tokens, metrics.timeouts_in_row,
            prompt_chars, metrics.prefill)
        if learned is not None:
            return Timeout(learned, LEARNED)
        return Timeout(self.default_s, DEFAULT)


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the broker takes on before it answers "busy"."""

    max_jobs: int = MAX_JOBS
    max_candidates: int = MAX_JOB_CANDIDATES
