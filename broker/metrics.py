"""Per-peer metrics: pure bookkeeping, keyed by the peer's name."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

_SAMPLES = 512


@dataclass(slots=True)
class PeerMetrics:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    cancelled: int = 0            # stopped because the job no longer needed it: no blame
    wins: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None   # wall clock, for people to read
    latencies: deque = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    ttfts: deque = field(default_factory=lambda: deque(maxlen=_SAMPLES))

    def started(self) -> None:
        self.requests += 1

    def succeeded(self, latency_s: float, ttft_s: float | None, tokens: int) -> None:
        self.successes += 1
        self.tokens += tokens
        self.busy_s += latency_s
        self.latencies.append(latency_s)
        if ttft_s is not None:
            self.ttfts.append(ttft_s)

    def failed(self, error: str, timeout: bool = False) -> None:
        self.failures += 1
        if timeout:
            self.timeouts += 1
        self.last_error = error
        self.last_error_at = time.time()

    @property
    def reliability(self) -> float:
        """Success rate with a prior of one success, so new peers start trusted."""
        return (self.successes + 1) / (self.successes + self.failures + 1)

    def to_map(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
            "wins": self.wins,
            "latency_mean_s": _mean(lat),
            "latency_p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None,
            "ttft_mean_s": _mean(self.ttfts),
            "tokens_per_s": self.tokens / self.busy_s if self.busy_s > 0 else None,
            "reliability": round(self.reliability, 4),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }


def _mean(xs) -> float | None:
    return sum(xs) / len(xs) if xs else None


MAX_PEERS = 256  # named peers remembered after they are gone


class MetricsBook:
    """Metrics per peer name. Live peers are always kept; of the gone ones, anonymous peers
    (strict MDP workers, named after a socket identity that never comes back) are forgotten
    at once and named ones are kept, the most recently seen `max_peers` of them."""

    def __init__(self, max_peers: int = MAX_PEERS) -> None:
        self._peers: dict[str, PeerMetrics] = {}  # in order of last use, oldest first
        self.max_peers = max_peers

    def peer(self, name: str) -> PeerMetrics:
        metrics = self._peers.pop(name, None) or PeerMetrics()
        self._peers[name] = metrics
        return metrics

    def names(self) -> list[str]:
        return sorted(self._peers)

    def forget(self, name: str) -> None:
        self._peers.pop(name, None)

    def trim(self, live: set[str]) -> None:
        """Forget the least recently used gone peers beyond `max_peers`."""
        excess = len(self._peers) - len(live) - self.max_peers
        for name in [n for n in self._peers if n not in live][:max(0, excess)]:
            del self._peers[name]
