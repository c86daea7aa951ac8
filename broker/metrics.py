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


class MetricsBook:
    def __init__(self) -> None:
        self._peers: dict[str, PeerMetrics] = {}

    def peer(self, name: str) -> PeerMetrics:
        if name not in self._peers:
            self._peers[name] = PeerMetrics()
        return self._peers[name]

    def names(self) -> list[str]:
        return sorted(self._peers)
