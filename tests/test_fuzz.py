"""Hostile input on real sockets (issue 9): the fuzz harness at a broker and a worker, msgpack
bombs at a `swarm-broker` process whose memory is watched, oversized messages at every
daemon, and strangers that try to make the broker keep things for them forever.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest
import zmq

from broker import routing
from client.client import SwarmClient
from common import frames as F
from common.codec import pack, unpack
from common.errors import RequestFailed
from common.messages import ClientRequest, WorkerReply, WorkerRequest
from common.profile import WorkerProfile
from tests.conftest import FAST_HB, free_port, run, wait_for_peers
from tests.fuzz_harness import fuzz_broker, fuzz_worker, worker_under_test
from tests.fuzz_peers import SYNTH_MODEL, SYNTH_TOKENS, ask, drain, socket
from tests.wire import FakeWorker, body_of, client_final, running_broker, status
from worker.session import SessionConfig, WorkerSession
from worker.synthetic import SyntheticBackend

pytestmark = pytest.mark.timeout(110)
MEMORY_BOUND_MB = 200


async def _synthetic_workers(ctx, endpoint: str, slots: int = 2) -> list[asyncio.Task]:
    profile = WorkerProfile(name="fuzz-synthetic", node_id="fuzz-synthetic", model=SYNTH_MODEL,
                            seed_variation=True, cancel=True)
    config = SessionConfig(endpoint, heartbeat_s=float(FAST_HB))
    return [asyncio.create_task(WorkerSession(ctx, config, profile,
                                              SyntheticBackend(SYNTH_TOKENS)).run())
            for _ in range(slots)]


async def _stop(tasks: list[asyncio.Task]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- the harness -------------------------------------------------------------------------------
def test_a_barrage_at_the_broker_leaves_honest_answers_right_and_every_refusal_counted(ctx):
    async def body():
        async with running_broker(ctx, heartbeat_s=float(FAST_HB)) as broker:
            workers = await _synthetic_workers(ctx, broker.endpoint)
            try:
                report = await fuzz_broker(ctx, broker.endpoint, messages=3000, seed=1)
                info = (await status(ctx, broker.endpoint))["broker"]
            finally:
                await _stop(workers)
            assert report.answered >= 2  # during the barrage and after it, each one right
            assert report.vandal_jobs > 0 and report.vandal_finals == report.vandal_jobs
            assert info["errors"] == 0  # nothing raised inside the broker
            refused = info["rejected"]
            for reason in ("malformed", "bad_request", "unknown_worker", "unexpected",
                           "malformed_replies"):
                assert refused[reason] > 0, reason
            assert refused["malformed"] == info["malformed"]
    run(body(), timeout_s=100)


def test_a_barrage_at_a_worker_session_leaves_it_serving_and_counting(ctx):
    async def body():
        refused = await fuzz_worker(ctx, messages=1000, seed=2)
        assert refused["answered"] >= 20  # an honest REQUEST after every burst, each right
        for reason in ("malformed", "bad_request", "busy", "unexpected"):
            assert refused[reason] > 0, reason
    run(body(), timeout_s=100)


def test_a_request_whose_job_id_nests_deep_does_not_kill_the_worker(ctx):
    """Found by fuzzing: the error FINAL for a bad REQUEST echoed str(job), and the repr of
    a 1010-deep list raised RecursionError out of the session, which then stopped."""
    async def body():
        async with worker_under_test(ctx) as (broker, _):
            await broker.registered()
            deep = b"\x82\xa3job" + b"\x91" * 1010 + b"\xc0" + b"\xa4cand\x00"
            broker.send(WorkerRequest(b"vandal", (deep,)).to_frames())
            _, reply = await broker.recv()
            assert isinstance(reply, WorkerReply) and reply.final
            assert "bad request" in unpack(reply.body[0])["error"]
            await broker.honest()
    run(body())


# -- memory ------------------------------------------------------------------------------------
def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) where Linux tells it, else the current."""
    status_file = Path(f"/proc/{pid}/status")
    if status_file.exists():
        for line in status_file.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return psutil.Process(pid).memory_info().rss / 2**20


def test_msgpack_bombs_and_a_barrage_leave_a_broker_process_small_and_serving(ctx, procs):
    """16 MiB of empty arrays is ~1 GiB of Python lists when msgpack builds it unasked."""
    port = free_port()
    broker = procs.broker(port)
    procs.start("python", "-m", "worker.synthetic", "--broker", f"tcp://127.0.0.1:{port}",
                "--name", "fuzz-synthetic", "--slots", "2", "--tokens", str(SYNTH_TOKENS),
                "--heartbeat-s", FAST_HB, name="synthetic")
    wait_for_peers(port, {"fuzz-synthetic"})
    endpoint = f"tcp://127.0.0.1:{port}"

    async def body():
        await ask(ctx, endpoint, seed=3)  # warm: the peak so far is the baseline
        before = _peak_rss_mb(broker.pid)
        report = await fuzz_broker(ctx, endpoint, messages=3000, seed=4, big=True)
        grown = _peak_rss_mb(broker.pid) - before
        assert grown < MEMORY_BOUND_MB, f"the broker's peak memory grew by {grown:.0f} MB"
        assert report.answered >= 2
        info = (await status(ctx, endpoint))["broker"]
        assert info["errors"] == 0 and info["rejected"]["bad_request"] > 0
    run(body(), timeout_s=100)
    assert broker.poll() is None, "the broker died"


# -- oversized messages ------------------------------------------------------------------------
OVERSIZED = b"x" * (F.MAX_MESSAGE_BYTES + 1)


def test_an_oversized_message_is_refused_at_the_brokers_socket(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            big = socket(ctx, broker.endpoint)
            await big.send_multipart([F.CLIENT, F.C_REQUEST, F.SERVICE_STATUS, OVERSIZED])
            await asyncio.sleep(0.5)  # time for it to arrive, were it let in
            info = (await status(ctx, broker.endpoint))["broker"]
            assert info["messages"] == 1  # this status request: the big one never came in
            assert not drain(big)  # and got no answer
            big.close()
    run(body())


def test_an_oversized_request_drops_the_workers_connection_and_it_comes_back(ctx):
    async def body():
        async with worker_under_test(ctx) as (broker, session):
            await broker.registered()
            first = broker.identity
            broker.send([F.WORKER, F.W_REQUEST, b"c", b"", OVERSIZED])
            await broker.registered()  # silence, then a new connection and READY
            assert broker.identity != first
            await broker.honest()
            assert session.rejected.total() == 0  # it never reached the session
    run(body())


def test_an_oversized_reply_drops_the_clients_connection_instead_of_filling_its_memory(ctx):
    async def body():
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        client = SwarmClient(f"tcp://127.0.0.1:{port}", ctx, retries=0)  # no lazy pirate here
        asked = asyncio.create_task(client.call(F.SERVICE_STATUS, {}, timeout_s=15.0))
        try:
            identity, *_ = await router.recv_multipart()
            await router.send_multipart([identity, F.CLIENT, F.C_FINAL, F.SERVICE_STATUS,
                                         OVERSIZED])
            # without MAXMSGSIZE it took all 17 MB in, then waited out its 15 s for a FINAL
            with pytest.raises(RequestFailed, match="lost the broker"):
                await asked
        finally:
            router.close()
    run(body())


# -- state a stranger leaves behind ------------------------------------------------------------
def test_a_stranger_that_floods_requests_and_never_reads_is_cut_off(ctx):
    for option, value in ((zmq.SNDHWM, 10), (zmq.SNDBUF, 4096)):  # small pipes: a short test
        ctx.setsockopt(option, value)  # for every socket made from now on, the broker's too

    async def body():
        async with running_broker(ctx) as broker:
            broker.delivery.hard_bytes = 100 * 512  # at most 100 kept (each costs over 512 bytes)
            mute = ctx.socket(zmq.DEALER)
            for option, value in ((zmq.LINGER, 0), (zmq.RCVHWM, 1), (zmq.RCVBUF, 4096)):
                mute.setsockopt(option, value)
            mute.connect(broker.endpoint)
            ask_status = ClientRequest(F.SERVICE_STATUS, (pack({}),)).to_frames()
            most = 0
            try:
                for i in range(3000):
                    await mute.send_multipart(ask_status)
                    if i % 100 == 0:
                        await asyncio.sleep(0.01)
                        most = max(most, broker.delivery.pending)
                assert most <= 100, f"the broker kept {most} unread replies for one stranger"
                assert broker.delivery.stats["cut_off"] >= 1
                assert "broker" in await status(ctx, broker.endpoint)  # others still served
            finally:
                mute.close()
    run(body(), timeout_s=100)


def test_routed_requests_wait_in_a_bounded_queue(ctx, monkeypatch):
    monkeypatch.setattr(routing, "MAX_QUEUED", 20, raising=False)  # (not 1000: a short test)

    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "echo", service=b"echo")
            await worker.ready(heartbeat_s=0.2)
            flood = socket(ctx, broker.endpoint)
            try:
                for i in range(30):  # the worker takes the first and never answers
                    await flood.send_multipart(ClientRequest(b"echo", (b"%d" % i,)).to_frames())
                _, busy = await client_final(flood, timeout_s=10.0)
                assert "busy" in body_of(busy)["error"]
                assert sum(len(q) for q in broker.router.queues.values()) <= 20
                assert (await status(ctx, broker.endpoint))["broker"]["rejected"]["busy"] >= 1
            finally:
                worker.close()
                flood.close()
    run(body())
