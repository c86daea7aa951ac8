"""Load: 20 clients at once, 10 jobs each, over 3 synthetic worker processes (issue 9).

The broker is a process of its own; the 20 clients are DEALERs on one asyncio loop in the
test, each sending its 10 jobs at once and reading everything that comes back. A client's
replies are fenced: after its 10th FINAL it asks `mmi.service`, and since the broker keeps
each peer's messages in order, anything more about its jobs (a duplicate FINAL, a late
event) would arrive before that answer. A job the broker accepts is known by the id in
its events and its FINAL; a refusal ("busy") is a FINAL with an error and no job.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import pytest

from broker.verdicts import BUSY
from common import frames as F
from common.codec import unpack
from common.messages import ClientRequest, decode_client, split_envelope
from tests.conftest import free_port, run, wait_for_peers
from tests.faults_util import synthetic
from tests.load_util import generate
from tests.wire import dealer, recv, status
from worker.synthetic import WORDS

pytestmark = pytest.mark.timeout(115)

CLIENTS, JOBS = 20, 10
WORKERS = ("w1", "w2", "w3")


@dataclass
class Seen:
    """What one client got back."""

    finals: list[dict] = field(default_factory=list)
    event_jobs: set[str] = field(default_factory=set)
    after_fence: list = field(default_factory=list)

    @property
    def accepted(self) -> list[str]:
        return [f["job"] for f in self.finals if "job" in f]

    @property
    def refused(self) -> list[dict]:
        return [f for f in self.finals if "job" not in f]


async def client(ctx, endpoint: str, index: int) -> Seen:
    sock, seen = dealer(ctx, endpoint), Seen()
    try:
        for j in range(JOBS):
            await sock.send_multipart(generate(
                prompt=f"client {index} job {j}", candidates=2, max_tokens=6, seed=index * JOBS + j,
                strategy="majority", timeout_s=600))  # the deadline never ends one here
        while len(seen.finals) < JOBS:
            msg = decode_client(split_envelope(await recv(sock, timeout_s=60))[1])
            assert msg.service == F.SERVICE_GENERATE
            body = unpack(msg.body[0])
            if msg.final:
                seen.finals.append(body)
            else:
                seen.event_jobs.add(body["job"])
        await sock.send_multipart(ClientRequest(F.MMI_SERVICE, (F.SERVICE_GENERATE,)).to_frames())
        while True:
            msg = decode_client(split_envelope(await recv(sock, timeout_s=60))[1])
            if msg.service == F.MMI_SERVICE:
                assert msg.body == (b"200",)
                return seen
            seen.after_fence.append(msg)
    finally:
        sock.close()


def check(seen: list[Seen]) -> tuple[int, int]:
    """Every accepted job: one FINAL, to the client that asked, with an answer. Every
    refusal: a FINAL that says busy. Returns (accepted, refused)."""
    ids = Counter(job for s in seen for job in s.accepted)
    assert all(n == 1 for n in ids.values()), "a job ended in two FINALs"
    for s in seen:
        assert len(s.finals) == JOBS and not s.after_fence
        assert s.event_jobs <= set(s.accepted), "an event about a job without a FINAL"
        for final in s.finals:
            if "job" in final:
                assert "error" not in final, final
                assert set(final["winner"]["text"].split()) <= set(WORDS), final
            else:
                assert final["error"].startswith(BUSY), final
    return len(ids), sum(len(s.refused) for s in seen)


def start_swarm(procs, *broker_args: str) -> str:
    port = free_port()
    procs.broker(port, *broker_args)
    endpoint = f"tcp://127.0.0.1:{port}"
    for name in WORKERS:
        synthetic(procs, port, name, "--slots", "2", "--tokens", "6",
                  "--token-delay-s", "0.002")
    wait_for_peers(port, set(WORKERS))
    return endpoint


async def load(ctx, endpoint: str) -> tuple[int, int, dict]:
    seen = await asyncio.gather(*(client(ctx, endpoint, i) for i in range(CLIENTS)))
    accepted, refused = check(seen)
    return accepted, refused, await status(ctx, endpoint)


def test_twenty_clients_ten_jobs_each_every_job_ends_in_exactly_one_final(procs, ctx):
    # Given a broker process and 3 synthetic workers of 2 slots
    endpoint = start_swarm(procs)
    # When 20 clients each send 10 jobs at once
    accepted, refused, after = run(load(ctx, endpoint), timeout_s=100)
    # Then all 200 are accepted and each ends in exactly one FINAL with its answer
    assert (accepted, refused) == (CLIENTS * JOBS, 0)
    assert after["broker"]["jobs_active"] == 0
    # and every worker took its share
    done = {p["name"]: p["metrics"]["requests"] for p in after["peers"]}
    assert all(done[w] > 0 for w in WORKERS), done


def test_a_full_broker_refuses_with_one_clear_final_and_loses_nothing_it_accepted(procs, ctx):
    # Given a broker that takes 8 jobs at a time
    endpoint = start_swarm(procs, "--max-jobs", "8")
    # When 20 clients each send 10 jobs at once
    accepted, refused, after = run(load(ctx, endpoint), timeout_s=100)
    # Then some are refused as busy, each with one FINAL, and every accepted one ends once
    assert accepted + refused == CLIENTS * JOBS
    assert accepted >= 8 and refused > 0
    assert after["broker"]["busy"] == refused and after["broker"]["jobs_active"] == 0
