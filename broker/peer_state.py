"""A peer's metrics as plain data, and back: what the broker keeps of them across restarts.

`snapshot` copies everything a PeerMetrics holds (the counters, the recent samples the
learned timeouts read, the TTFT histogram) into JSON-ready data; it runs on the socket loop,
so it only copies, and the writer thread encodes. `restore` reads such data back, trusting
none of it: a counter that is not a count (or is past MAX_COUNT), or a sample that is not a
finite number, is left at its default, and a histogram with other buckets than this
version's starts empty.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from broker.metrics import TTFT_BUCKETS_S, Histogram, PeerMetrics
from common.bodies import MAX_ERROR

COUNTS = ("requests", "successes", "failures", "timeouts", "cancelled", "request_errors",
          "heartbeat_misses", "cancel_ignored", "wins", "tokens", "timeouts_in_row")
SAMPLES = ("latencies", "ttfts", "rates", "prefill")
MAX_COUNT = 2**53  # far past any count a broker reaches; msgpack cannot send past 2**64
_SAMPLE_CAP = {f.name: f.default_factory().maxlen for f in fields(PeerMetrics) if f.name in SAMPLES}


def snapshot(m: PeerMetrics) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(m, name) for name in COUNTS}
    out.update({name: list(getattr(m, name)) for name in SAMPLES})
    h = m.ttft_histogram
    out.update(busy_s=m.busy_s, last_error=m.last_error, last_error_at=m.last_error_at,
               ttft_histogram={"bounds": list(h.bounds), "counts": list(h.counts),
                               "sum": h.sum, "count": h.count})
    return out


def fingerprint(m: PeerMetrics) -> tuple:
    """Changes whenever anything `snapshot` copies changes (every sample comes with a count)."""
    return (*(getattr(m, name) for name in COUNTS), m.last_error_at)


def restore(data: Any) -> PeerMetrics:
    m = PeerMetrics()
    if not isinstance(data, dict):
        return m
    for name in COUNTS:
        if _count(data.get(name)):
            setattr(m, name, data[name])
    for name in SAMPLES:
        samples = data.get(name)
        if isinstance(samples, list) and all(_finite(x) and x >= 0 for x in samples):
            getattr(m, name).extend(float(x) for x in samples[-_SAMPLE_CAP[name]:])
    if _finite(data.get("busy_s")) and data["busy_s"] >= 0:
        m.busy_s = float(data["busy_s"])
    if isinstance(data.get("last_error"), str):
        m.last_error = data["last_error"][:MAX_ERROR]  # as long as a live one may be
        m.last_error_at = float(data["last_error_at"]) if _finite(data.get("last_error_at")) \
            else None
    m.ttft_histogram = _histogram(data.get("ttft_histogram")) or m.ttft_histogram
    return m


def _histogram(data: Any) -> Histogram | None:
    if not isinstance(data, dict) or data.get("bounds") != list(TTFT_BUCKETS_S):
        return None
    counts, total, count = data.get("counts"), data.get("sum"), data.get("count")
    if not (isinstance(counts, list) and len(counts) == len(TTFT_BUCKETS_S) + 1
            and all(_count(c) for c in counts) and _count(count) and sum(counts) == count
            and _finite(total)):
        return None
    return Histogram(TTFT_BUCKETS_S, list(counts), float(total), count)


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_COUNT


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
