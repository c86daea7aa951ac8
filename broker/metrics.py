"""Per-peer and per-job metrics: pure bookkeeping, keyed by the peer's name.

The means and the p95 come from the last `_SAMPLES` answers; the histograms count every
observation since the broker started (what Prometheus expects of them, see broker/prom.py).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from broker.adaptive import decode_rate

_SAMPLES = 512
TTFT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
JOB_OK, JOB_FAILED, JOB_CANCELLED = "ok", "failed", "cancelled"
JOB_OUTCOMES = (JOB_OK, JOB_FAILED, JOB_CANCELLED)


@dataclass(slots=True)
class Histogram:
    """Observations counted per bucket since the start, never forgotten; a value falls in
    the first bucket whose upper bound is at least the value, or past the last one."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # one per bound, then one for +Inf
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must rise strictly")
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at most that), the last bound being +Inf."""
        out, seen = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            seen += n
            out.append((bound, seen))
        return out


@dataclass(slots=True)
class JobMetrics:
    """How the broker's jobs ended, and how long each took, by outcome."""

    ended: dict[str, int] = field(default_factory=lambda: dict.fromkeys(JOB_OUTCOMES, 0))
    durations: dict[str, Histogram] = field(
        default_factory=lambda: {o: Histogram(JOB_BUCKETS_S) for o in JOB_OUTCOMES})

    def end(self, outcome: str, duration_s: float) -> None:
        if outcome not in self.ended:
            raise ValueError(f"unknown job outcome {outcome!r}")
        self.ended[outcome] += 1
        self.durations[outcome].observe(max(0.0, duration_s))


@dataclass(slots=True)
class PeerMetrics:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    cancelled: int = 0            # stopped because the job no longer needed it: no blame
    request_errors: int = 0       # failed through the request's fault: no blame either
    heartbeat_misses: int = 0     # slots lost because they went silent
    cancel_ignored: int = 0       # slots disconnected for working on past a CANCEL's grace
    wins: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None   # wall clock, for people to read
    latencies: deque = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    ttfts: deque = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    rates: deque = field(default_factory=lambda: deque(maxlen=_SAMPLES))  # decode tokens/s
    prefill: deque = field(default_factory=lambda: deque(maxlen=_SAMPLES))  # TTFT s per prompt char
    timeouts_in_row: int = 0      # since the last success: the learned timeout backs off
    ttft_histogram: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS_S))

    def started(self) -> None:
        self.requests += 1

    def succeeded(self, latency_s: float, ttft_s: float | None, tokens: int,
                  prompt_chars: int = 0) -> None:
        self.successes += 1
        self.tokens += tokens
        self.busy_s += latency_s
        self.latencies.append(latency_s)
        self.timeouts_in_row = 0
        if ttft_s is not None:
            self.ttfts.append(ttft_s)
            self.ttft_histogram.observe(ttft_s)
            if prompt_chars > 0:
                self.prefill.append(ttft_s / prompt_chars)
        rate = decode_rate(latency_s, ttft_s, tokens)
        if rate is not None:
            self.rates.append(rate)

    def failed(self, error: str, timeout: bool = False) -> None:
        self.failures += 1
        if timeout:
            self.timeouts += 1
            self.timeouts_in_row += 1
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
            "request_errors": self.request_errors,
            "heartbeat_misses": self.heartbeat_misses,
            "cancel_ignored": self.cancel_ignored,
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


MAX_PEERS = 256  # named peers remembered after they are gone: bounds the `peer` label


class MetricsBook:
    """Metrics per peer name. Live peers are always kept; of the gone ones, anonymous peers
    (strict MDP workers, named after a socket identity that never comes back) are forgotten
    at once and named ones are kept, the most recently seen `max_peers` of them."""

    def __init__(self, max_peers: int = MAX_PEERS) -> None:
        self._peers: dict[str, PeerMetrics] = {}  # in order of last use, oldest first
        self.max_peers = max_peers
        self.jobs = JobMetrics()

    def peer(self, name: str) -> PeerMetrics:
        metrics = self._peers.pop(name, None) or PeerMetrics()
        self._peers[name] = metrics
        return metrics

    def names(self) -> list[str]:
        return sorted(self._peers)

    def items(self) -> list[tuple[str, PeerMetrics]]:
        """Every known peer's metrics, by name; reading them does not count as a use."""
        return sorted(self._peers.items())

    def ordered(self) -> list[tuple[str, PeerMetrics]]:
        """Every known peer's metrics, least recently used first (the order kept on disk)."""
        return list(self._peers.items())

    def restore(self, name: str, metrics: PeerMetrics) -> None:
        """Put back a peer's metrics kept from an earlier run, as its most recent use."""
        self._peers.pop(name, None)
        self._peers[name] = metrics

    def forget(self, name: str) -> None:
        self._peers.pop(name, None)

    def trim(self, live: set[str]) -> None:
        """Forget the least recently used gone peers beyond `max_peers`."""
        excess = len(self._peers) - len(live) - self.max_peers
        for name in [n for n in self._peers if n not in live][:max(0, excess)]:
            del self._peers[name]
