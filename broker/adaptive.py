"""Per-peer timeouts learned from each peer's own history: pure arithmetic, no sockets.

A candidate that may write `max_tokens` tokens on a peer gets

    factor x (p95 of the peer's recent times to first token, scaled to the prompt
              + max_tokens / p10 of its recent decode rates)

doubled for each timeout the peer ran into since its last success, and clamped to
[floor, cap]. High and low quantiles, not means, so a fast streak does not tighten it and
one absurd sample does not move it; the clamp bounds whatever the samples say.

The time to first token scales with the prompt: a peer's history of short chats must not
cut off a coding agent's prompt of thousands of tokens. So each answer also leaves its
TTFT per prompt character, and a candidate's TTFT is the larger of the peer's p95 TTFT and
its prompt's size times the p95 of that per-character pace (an overestimate for long
prompts, as the fixed part of a TTFT is scaled too: erring long, never short).

A timed-out attempt is a censored sample: it says only that the peer needed more than the
time it had. It adds no sample (which would teach the policy that the peer is fast, or how
fast it is when stuck); it doubles the learned value instead, until the peer succeeds again,
as TCP backs off its retransmission timer (Karn's algorithm). A timeout can only raise the
value, never lower it.
"""

from __future__ import annotations

import math
from itertools import islice
from collections.abc import Sequence
from dataclasses import dataclass

OVERRIDE, HINT, LEARNED, DEFAULT = "override", "hint", "learned", "default"
SOURCES = (OVERRIDE, HINT, LEARNED, DEFAULT)

DEFAULT_FLOOR_S = 5.0     # never cut a peer off sooner: heartbeats, a busy host, a slow link
DEFAULT_CAP_S = 600.0     # never wait longer for one candidate, whatever the history says
MIN_SAMPLES = 3           # fewer successes than this: the broker's default, not a guess
WINDOW = 32               # the most recent samples that count: a peer's pace changes
FACTOR = 2.0              # head-room over what the quantiles say
TTFT_QUANTILE = 0.95
RATE_QUANTILE = 0.10
MAX_BACKOFF = 10          # doublings counted at most: 1024 x takes the floor past the default cap
MIN_RATE = 1e-3           # tokens/s; a rate sample is clamped into [MIN_RATE, MAX_RATE]
MAX_RATE = 1e6
REFERENCE_MAX_TOKENS = 256  # what `swarm.status` quotes a peer's timeout for (Sampling's default)


@dataclass(frozen=True, slots=True)
class Timeout:
    """The timeout in force for one candidate, and where it came from (one of SOURCES)."""

    s: float
    source: str


@dataclass(frozen=True, slots=True)
class Learning:
    """How a peer's timeout is learned; `floor_s` and `cap_s` come from the broker's CLI."""

    floor_s: float = DEFAULT_FLOOR_S
    cap_s: float = DEFAULT_CAP_S
    min_samples: int = MIN_SAMPLES
    window: int = WINDOW
    factor: float = FACTOR

    def __post_init__(self) -> None:
        if not (0 < self.floor_s <= self.cap_s and math.isfinite(self.cap_s)):
            raise ValueError(f"the timeout floor ({self.floor_s} s) must be above 0 and at "
                             f"most the cap ({self.cap_s} s)")

    def learned_s(self, ttfts: Sequence[float], rates: Sequence[float], max_tokens: int,
                  timeouts_in_row: int = 0, prompt_chars: int = 0,
                  prefill: Sequence[float] = ()) -> float | None:
        """Seconds for a candidate of `max_tokens` after a prompt of `prompt_chars` on a peer
        with these samples (oldest first; `prefill` in seconds of TTFT per prompt char);
        None while it has fewer than `min_samples` TTFTs or rates."""
        ttfts, rates = _recent(ttfts, self.window), _recent(rates, self.window)
        if len(ttfts) < self.min_samples or len(rates) < self.min_samples:
            return None
        ttft = quantile(ttfts, TTFT_QUANTILE)
        per_char = _recent(prefill, self.window)
        if prompt_chars > 0 and len(per_char) >= self.min_samples:
            ttft = max(ttft, prompt_chars * quantile(per_char, TTFT_QUANTILE))
        ttft = min(ttft, self.cap_s)
        rate = max(quantile(rates, RATE_QUANTILE), MIN_RATE)
        seconds = self.factor * (ttft + max(1, max_tokens) / rate)
        seconds *= 2 ** min(max(0, timeouts_in_row), MAX_BACKOFF)
        return min(self.cap_s, max(self.floor_s, seconds))


def decode_rate(latency_s: float, ttft_s: float | None, tokens: int) -> float | None:
    """Tokens per second after the first token, from one successful answer; None where the
    answer says nothing about it (under two tokens, no first token, no time between)."""
    if ttft_s is None or tokens < 2 or not (math.isfinite(latency_s) and math.isfinite(ttft_s)):
        return None
    decode_s = latency_s - ttft_s
    if decode_s <= 0:
        return None
    return min(MAX_RATE, max(MIN_RATE, (tokens - 1) / decode_s))


def quantile(xs: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of a non-empty sequence (q=0.95: the value 95% stay under)."""
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _recent(xs: Sequence[float], n: int) -> list[float]:
    """The last `n` samples that are numbers at all (newest first: order does not count)."""
    return [x for x in islice(reversed(xs), n) if math.isfinite(x) and x >= 0]
