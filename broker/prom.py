"""GET /metrics: the broker's state in the Prometheus text format, read at scrape time.

The numbers live in the pure bookkeeping (broker/metrics.py, the registry, the services'
stats); this module only names and formats them with prometheus-client. Each render
builds a `CollectorRegistry` of its own around one collector for one broker, never the
process-wide default registry, so two brokers in one process never share or clash.

Labels stay few: `peer` ranges over the live peers plus at most `MAX_PEERS` gone ones
(MetricsBook forgets the least recently seen beyond that, and anonymous workers as soon
as they go); `outcome` is one of a fixed handful. Call `render` on the broker's event loop:
it reads live state without locks, as the loop itself does.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from broker.metrics import JOB_OUTCOMES, Histogram, MetricsBook, PeerMetrics

if TYPE_CHECKING:
    from broker.server import Broker

CANDIDATE_OUTCOMES = ("ok", "failed", "timeout", "cancelled")
# The classic text format, which every Prometheus reads. (prometheus-client 0.22+ calls its
# output 1.0.0; for names like ours, all [a-z_], the bytes are the same.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(broker: Broker) -> tuple[bytes, str]:
    """The body of a /metrics reply and its Content-Type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker))
    return generate_latest(registry), CONTENT_TYPE


class BrokerCollector(Collector):
    """Reads one broker's state each time it is collected."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        yield from _jobs(self.broker)
        yield from _peers(self.broker.metrics, Counter(s.peer for s in self.broker.registry.all()))
        yield from _loop(self.broker)


def _jobs(broker: Broker) -> Iterator[Metric]:
    book = broker.metrics.jobs
    ended = CounterMetricFamily("swarm_jobs", "Jobs ended, by outcome.", labels=["outcome"])
    duration = HistogramMetricFamily("swarm_job_duration_seconds",
                                     "From a job's submission to its final reply, by outcome.",
                                     labels=["outcome"])
    for outcome in JOB_OUTCOMES:
        ended.add_metric([outcome], book.ended[outcome])
        _observed(duration, [outcome], book.durations[outcome])
    yield ended
    yield duration
    yield GaugeMetricFamily("swarm_jobs_active", "Jobs accepted and not yet ended.",
                            value=len(broker.generate.jobs))
    yield GaugeMetricFamily("swarm_candidates_active",
                            "Candidates of the active jobs, in any state.",
                            value=broker.generate.candidates)


def _peers(book: MetricsBook, live: Counter) -> Iterator[Metric]:
    """Per-peer series; a peer keeps its series while MetricsBook remembers it."""
    cands = CounterMetricFamily("swarm_candidates", "Candidate attempts ended, by peer and "
                                "outcome.", labels=["peer", "outcome"])
    counters = {
        "timeouts": ("swarm_peer_timeouts", "Candidates the peer did not finish in time."),
        "failures": ("swarm_peer_failures", "Candidates that failed through the peer's fault, "
                     "timeouts and lost slots included."),
        "tokens": ("swarm_tokens", "Completion tokens of the answers the peer finished."),
        "heartbeat_misses": ("swarm_heartbeat_misses", "Slots lost because they went silent."),
        "cancel_ignored": ("swarm_cancels_ignored", "Slots disconnected because they worked on "
                           "past a CANCEL's grace."),
        "wins": ("swarm_votes_won", "Jobs whose vote the peer's candidate won."),
    }
    families = {key: CounterMetricFamily(name, text, labels=["peer"])
                for key, (name, text) in counters.items()}
    ttft = HistogramMetricFamily("swarm_time_to_first_token_seconds", "From a candidate's "
                                 "dispatch to its first token, of the answers the peer finished.",
                                 labels=["peer"])
    slots = GaugeMetricFamily("swarm_peer_slots", "The peer's live slots.", labels=["peer"])
    for name, peer in book.items():
        for outcome, count in zip(CANDIDATE_OUTCOMES, _candidate_outcomes(peer)):
            cands.add_metric([name, outcome], count)
        for key, family in families.items():
            family.add_metric([name], getattr(peer, key))
        _observed(ttft, [name], peer.ttft_histogram)
        slots.add_metric([name], live.get(name, 0))
    yield cands
    yield from families.values()
    yield ttft
    yield slots


def _candidate_outcomes(peer: PeerMetrics) -> tuple[int, int, int, int]:
    """(ok, failed, timeout, cancelled): a timeout is counted once, as a timeout."""
    failed = peer.failures - peer.timeouts + peer.request_errors
    return peer.successes, failed, peer.timeouts, peer.cancelled


def _observed(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    buckets = [(floatToGoString(bound), count) for bound, count in h.cumulative()]
    family.add_metric(labels, buckets, h.sum)


def _loop(broker: Broker) -> Iterator[Metric]:
    slots = broker.registry.all()
    yield GaugeMetricFamily("swarm_workers_live", "Live worker slots.", value=len(slots))
    yield GaugeMetricFamily("swarm_workers_busy", "Live worker slots at work.",
                            value=sum(1 for s in slots if not s.idle))
    yield GaugeMetricFamily("swarm_broker_uptime_seconds", "Since the broker started.",
                            value=time.monotonic() - broker.started_at)
    yield GaugeMetricFamily("swarm_messages_pending", "Messages waiting for a slow peer.",
                            value=broker.delivery.pending)
    counters = (
        ("swarm_broker_messages", "Messages the broker received.", broker.stats["messages"]),
        ("swarm_broker_malformed", "Received messages dropped as malformed.",
         broker.rejected["malformed"]),
        ("swarm_broker_errors", "Errors the broker caught and survived.", broker.stats["errors"]),
        ("swarm_malformed_replies", "Worker replies that failed their candidate as malformed.",
         broker.generate.stats["malformed_replies"]),
        ("swarm_busy_refusals", "Jobs refused because the broker was full.",
         broker.generate.stats["busy"]),
        ("swarm_messages_sent", "Messages sent to peers.", broker.delivery.stats["sent"]),
        ("swarm_messages_backlogged", "Messages a slow peer could not take at once.",
         broker.delivery.stats["backlogged"]),
        ("swarm_messages_shed", "Droppable messages (heartbeats, tokens) shed for a slow peer.",
         broker.delivery.stats["shed"]),
        ("swarm_messages_undeliverable", "Messages to peers that had gone.",
         broker.delivery.stats["undeliverable"]),
    )
    for name, text, value in counters:
        yield CounterMetricFamily(name, text, value=value)
    rejected = CounterMetricFamily("swarm_rejected", "Messages, jobs and peers refused, by reason "
                                   "(swarm.status broker.rejected).", labels=["reason"])
    for reason, count in sorted(broker.rejections().items()):
        rejected.add_metric([reason], count)
    yield rejected
