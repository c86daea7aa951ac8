"""broker/prom.py: GET /metrics, read back with prometheus-client's own parser.

Jobs run through a real Broker on loopback, one worker at a time so each ends one way:
an answer, a peer's error, the request's fault, a timeout, a silent worker, a cancel.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.prom import render
from broker.server import Broker, BrokerConfig
from common import frames as F
from common.bodies import Chunk, Outcome, Task
from common.codec import pack, unpack
from common.messages import ClientRequest
from tests.conftest import run
from tests.wire import FakeWorker, body_of, client_final, dealer, running_broker

pytestmark = pytest.mark.timeout(60)

ODD = 'good "one"\nline\\2'  # a peer name that must be escaped in a label
ONE = {"prompt": "2+2=", "candidates": 1, "stream": "winner"}
BEAT_S = 0.3  # ten missed beats, 3 s of silence, and a worker is dead
Samples = dict[tuple[str, tuple], float]


def scrape(broker: Broker) -> Samples:
    body, content_type = render(broker)
    assert content_type.startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def until(check, timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still not so after {timeout_s} s")


async def joined(broker: Broker, ctx, name: str) -> FakeWorker:
    """A worker that is the only live one, so it takes the next job."""
    worker = FakeWorker(ctx, broker.endpoint, name)
    await worker.ready(heartbeat_s=BEAT_S)
    await until(lambda: len(broker.registry) == 1)
    return worker


async def leave(broker: Broker, worker: FakeWorker) -> None:
    await worker.send([F.WORKER, F.W_DISCONNECT])
    await until(lambda: len(broker.registry) == 0)
    worker.close()


async def task(worker: FakeWorker) -> tuple[bytes, Task]:
    msg = await worker.next()
    return msg.client, Task.from_map(unpack(msg.body[0]))


async def job(client, worker: FakeWorker, **final) -> dict:
    """One job: the worker takes it and sends a FINAL with these fields; the client's FINAL."""
    await client.send_multipart(ClientRequest(F.SERVICE_GENERATE, (pack(ONE),)).to_frames())
    to, t = await task(worker)
    await worker.reply(to, Outcome(t.job, t.cand, **final).to_map(), final=True)
    return body_of((await client_final(client))[1])


async def six_jobs(ctx, broker: Broker) -> None:
    client = dealer(ctx, broker.endpoint)
    good = await joined(broker, ctx, ODD)
    await client.send_multipart(ClientRequest(F.SERVICE_GENERATE, (pack(ONE),)).to_frames())
    to, t = await task(good)
    await good.reply(to, Chunk(t.job, t.cand, 0, "fo").to_map(), final=False)
    await good.reply(to, Outcome(t.job, t.cand, text="four", usage={"completion_tokens": 7}).to_map(),
                     final=True)
    assert body_of((await client_final(client))[1])["winner"]["peer"] == ODD
    await leave(broker, good)

    bad = await joined(broker, ctx, "bad")
    assert "boom" in (await job(client, bad, error="boom"))["error"]
    await leave(broker, bad)

    small = await joined(broker, ctx, "small")
    assert "error" in await job(client, small, error="too long", error_kind="request",
                                error_code="context_length_exceeded")
    await leave(broker, small)

    slow = await joined(broker, ctx, "slow")  # the broker gives "slow" 0.5 s to answer
    await client.send_multipart(ClientRequest(F.SERVICE_GENERATE, (pack(ONE),)).to_frames())
    to, t = await task(slow)
    assert type(await slow.next()).__name__ == "Cancel"  # it timed out
    await slow.reply(to, Outcome(t.job, t.cand, text="late").to_map(), final=True)
    assert "timed out" in body_of((await client_final(client))[1])["error"]
    await leave(broker, slow)

    mute = await joined(broker, ctx, "mute")
    await client.send_multipart(ClientRequest(F.SERVICE_GENERATE, (pack(ONE),)).to_frames())
    await task(mute)
    mute.beats.cancel()  # silent from now on
    assert "went silent" in body_of((await client_final(client))[1])["error"]
    mute.close()

    holder = await joined(broker, ctx, "holder")
    await client.send_multipart(ClientRequest(F.SERVICE_GENERATE, (pack(ONE),)).to_frames())
    await task(holder)
    await client.send_multipart(ClientRequest(F.SERVICE_CANCEL, (pack({}),)).to_frames())
    finals = [body_of((await client_final(client))[1]) for _ in range(2)]
    assert {"cancelled": 1} in finals
    await until(lambda: not broker.generate.jobs)
    holder.close()
    client.close()


def test_metrics_count_what_each_peer_and_job_did(ctx):
    async def body():
        async with running_broker(ctx, heartbeat_s=BEAT_S, liveness=10,
                                  peer_timeouts={"slow": 0.5}) as broker:
            await six_jobs(ctx, broker)
            return scrape(broker), broker.rejections()

    m, rejected = run(body(), timeout_s=50)
    assert [value(m, "swarm_jobs_total", outcome=o) for o in ("ok", "failed", "cancelled")] \
        == [1, 4, 1]
    assert value(m, "swarm_jobs_active") == 0
    assert sum(value(m, "swarm_job_duration_seconds_count", outcome=o)
               for o in ("ok", "failed", "cancelled")) == 6
    assert value(m, "swarm_job_duration_seconds_bucket", outcome="failed", le="+Inf") == 4
    outcomes = ("ok", "failed", "timeout", "cancelled")
    expected = {ODD: (1, 0, 0, 0), "bad": (0, 1, 0, 0), "small": (0, 1, 0, 0),
                "slow": (0, 0, 1, 0), "mute": (0, 1, 0, 0), "holder": (0, 0, 0, 1)}
    for peer, counts in expected.items():
        got = tuple(value(m, "swarm_candidates_total", peer=peer, outcome=o) for o in outcomes)
        assert got == counts, peer
    failures = {ODD: 0, "bad": 1, "small": 0, "slow": 1, "mute": 1, "holder": 0}
    assert {p: value(m, "swarm_peer_failures_total", peer=p) for p in failures} == failures
    assert value(m, "swarm_peer_timeouts_total", peer="slow") == 1
    assert value(m, "swarm_peer_timeouts_total", peer="bad") == 0
    assert value(m, "swarm_heartbeat_misses_total", peer="mute") == 1
    assert value(m, "swarm_heartbeat_misses_total", peer="holder") == 0
    assert value(m, "swarm_cancels_ignored_total", peer="holder") == 0  # within its grace
    assert value(m, "swarm_tokens_total", peer=ODD) == 7
    assert value(m, "swarm_votes_won_total", peer=ODD) == 1
    assert value(m, "swarm_votes_won_total", peer="bad") == 0
    assert value(m, "swarm_time_to_first_token_seconds_count", peer=ODD) == 1
    assert value(m, "swarm_time_to_first_token_seconds_bucket", peer=ODD, le="+Inf") == 1
    assert value(m, "swarm_time_to_first_token_seconds_count", peer="bad") == 0
    assert value(m, "swarm_workers_live") == 1 and value(m, "swarm_peer_slots", peer="holder") == 1
    assert value(m, "swarm_peer_slots", peer="bad") == 0
    assert value(m, "swarm_broker_messages_total") > 0
    assert value(m, "swarm_broker_malformed_total") == 0
    # every refusal by reason, as swarm.status counts them
    assert {r: value(m, "swarm_rejected_total", reason=r) for r in rejected} == rejected
    assert {"malformed_replies", "stale_replies", "busy", "shed", "cut_off"} <= set(rejected)


def test_a_peer_name_with_quotes_and_newlines_is_escaped_in_its_label(ctx):
    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:*"), ctx)
    try:
        broker.metrics.peer(ODD).succeeded(1.0, 0.3, tokens=5)
        text = render(broker)[0].decode()
    finally:
        broker.voter.shutdown()
    assert 'swarm_tokens_total{peer="good \\"one\\"\\nline\\\\2"} 5.0' in text.splitlines()
    assert value(scrape(broker), "swarm_tokens_total", peer=ODD) == 5


def test_two_brokers_in_one_process_each_render_their_own_numbers(ctx):
    brokers = [Broker(BrokerConfig(bind="tcp://127.0.0.1:*"), ctx) for _ in range(2)]
    try:
        brokers[0].metrics.jobs.end("ok", 1.0)
        brokers[1].metrics.jobs.end("failed", 1.0)
        brokers[1].metrics.jobs.end("failed", 2.0)
        first, second = scrape(brokers[0]), scrape(brokers[1])
    finally:
        for broker in brokers:
            broker.voter.shutdown()
    assert value(first, "swarm_jobs_total", outcome="ok") == 1
    assert value(first, "swarm_jobs_total", outcome="failed") == 0
    assert value(second, "swarm_jobs_total", outcome="failed") == 2
