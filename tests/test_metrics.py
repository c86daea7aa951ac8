"""broker/metrics.py: per-peer counters, latency statistics and reliability."""

from __future__ import annotations

import time

import pytest

from broker.metrics import TTFT_BUCKETS_S, Histogram, JobMetrics, MetricsBook, PeerMetrics

pytestmark = pytest.mark.timeout(10)

KEYS = {"requests", "successes", "failures", "timeouts", "cancelled", "request_errors",
        "heartbeat_misses", "cancel_ignored", "wins", "latency_mean_s", "latency_p95_s", "ttft_mean_s",
        "tokens_per_s", "reliability", "last_error", "last_error_at"}


def test_a_new_peer_has_zero_counters_no_statistics_and_full_trust():
    m = PeerMetrics().to_map()
    assert set(m) == KEYS
    assert (m["requests"], m["successes"], m["failures"], m["timeouts"], m["wins"],
            m["request_errors"], m["heartbeat_misses"], m["cancel_ignored"]) == (0,) * 8
    assert m["latency_mean_s"] is m["latency_p95_s"] is m["ttft_mean_s"] is m["tokens_per_s"] is None
    assert m["reliability"] == 1.0 and m["last_error"] is None and m["last_error_at"] is None


def test_counters_and_throughput():
    p = PeerMetrics()
    for _ in range(3):
        p.started()
    p.succeeded(2.0, 0.5, tokens=10)
    p.succeeded(4.0, None, tokens=20)
    p.failed("boom", timeout=True)
    m = p.to_map()
    assert (m["requests"], m["successes"], m["failures"], m["timeouts"]) == (3, 2, 1, 1)
    assert m["latency_mean_s"] == 3.0
    assert m["ttft_mean_s"] == 0.5            # a missing ttft is not counted as zero
    assert m["tokens_per_s"] == 5.0           # 30 tokens over 6 busy seconds


@pytest.mark.parametrize("latencies, p95", [([7.0], 7.0), (list(range(1, 11)), 10.0),
                                            (list(range(50, 0, -1)), 48.0)])
def test_p95_latency_is_taken_from_the_sorted_samples(latencies, p95):
    p = PeerMetrics()
    for lat in latencies:
        p.succeeded(float(lat), None, 0)
    assert p.to_map()["latency_p95_s"] == p95


def test_reliability_has_a_prior_of_one_success():
    p = PeerMetrics()
    p.failed("x")
    assert p.reliability == 0.5
    p.succeeded(1.0, None, 1)
    p.failed("y")
    assert p.reliability == pytest.approx(2 / 4)
    for _ in range(3):
        p.succeeded(1.0, None, 1)
    assert p.to_map()["reliability"] == round(5 / 7, 4)


def test_last_error_keeps_the_latest_message_and_its_wall_clock_time():
    p = PeerMetrics()
    before = time.time()
    p.failed("first")
    p.failed("second")
    after = time.time()
    assert p.last_error == "second" and p.timeouts == 0
    assert before <= p.last_error_at <= after
    p.succeeded(1.0, None, 1)
    assert p.to_map()["last_error"] == "second"   # a success does not erase the last error


def test_metrics_book_creates_each_peer_once_and_lists_names_sorted():
    book = MetricsBook()
    book.peer("zeta").started()
    book.peer("alpha").wins += 1
    book.peer("zeta").started()
    assert book.names() == ["alpha", "zeta"]
    assert book.peer("zeta").requests == 2 and book.peer("alpha").to_map()["wins"] == 1


def test_a_histogram_counts_each_value_in_the_first_bucket_at_least_as_large():
    h = Histogram((0.5, 1.0, 5.0))
    for value in (0.1, 0.5, 0.7, 1.0, 4.0, 9.0):
        h.observe(value)
    assert h.counts == [2, 2, 1, 1]               # a bound is inclusive: 0.5 <= 0.5
    assert h.cumulative() == [(0.5, 2), (1.0, 4), (5.0, 5), (float("inf"), 6)]
    assert (h.count, h.sum) == (6, pytest.approx(15.3))


def test_a_histogram_keeps_every_observation_past_the_sample_window():
    p = PeerMetrics()
    for _ in range(600):                          # more than the 512 samples the means use
        p.succeeded(1.0, 0.2, 1)
    assert len(p.ttfts) == 512
    assert p.ttft_histogram.count == 600 and p.ttft_histogram.cumulative()[-1][1] == 600
    assert p.ttft_histogram.bounds == TTFT_BUCKETS_S


def test_a_histogram_refuses_bounds_that_do_not_rise():
    with pytest.raises(ValueError):
        Histogram((1.0, 0.5))


def test_job_metrics_count_each_outcome_and_its_duration():
    jobs = JobMetrics()
    jobs.end("ok", 0.3)
    jobs.end("ok", 2.0)
    jobs.end("cancelled", 1.0)
    assert jobs.ended == {"ok": 2, "failed": 0, "cancelled": 1}
    assert jobs.durations["ok"].count == 2 and jobs.durations["ok"].sum == pytest.approx(2.3)
    assert jobs.durations["failed"].count == 0
    with pytest.raises(ValueError):
        jobs.end("lost", 1.0)


def test_reading_the_metrics_book_does_not_reorder_who_is_forgotten_first():
    book = MetricsBook(max_peers=1)
    book.peer("old")
    book.peer("new")
    assert [name for name, _ in book.items()] == ["new", "old"]
    book.trim(live=set())
    assert book.names() == ["new"]
