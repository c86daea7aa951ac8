"""The worker's MDP session against a raw ROUTER standing in for the broker.

The backend here is a scripted fake: these tests are about the session's protocol
(heartbeats while busy, CANCEL, DISCONNECT, silence); test_e2e runs the real model.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import zmq

from common import frames as F
from common.bodies import Outcome, Sampling, Task
from common.codec import pack, unpack
from common.messages import Cancel, Disconnect, Heartbeat, Ready, WorkerReply, WorkerRequest, decode
from common.profile import WorkerProfile
from tests.conftest import run
from worker.session import SessionConfig, WorkerSession

HB = 0.05


class SlowBackend:
    """Thinks for `think_s`, then emits `pieces` pieces `gap_s` apart; honours cancellation."""

    name, model = "fake", "fake-model"

    def __init__(self, think_s: float = 0.0, pieces: int = 3, gap_s: float = 0.01):
        self.think_s, self.pieces, self.gap_s = think_s, pieces, gap_s

    def generate(self, task: Task, emit, cancelled: threading.Event) -> Outcome:
        time.sleep(self.think_s)
        for i in range(self.pieces):
            if cancelled.is_set():
                return Outcome(task.job, task.cand, text="", finish_reason="cancelled")
            emit(f"p{i} ")
            time.sleep(self.gap_s)
        return Outcome(task.job, task.cand, text="done", finish_reason="stop",
                       usage={"completion_tokens": self.pieces})


class FloodBackend:
    """Streams up to `pieces` pieces of `size` characters as fast as it can; honours cancel."""

    name, model = "fake", "fake-model"

    def __init__(self, pieces: int, size: int = 4, gap_s: float = 0.0):
        self.pieces, self.size, self.gap_s = pieces, size, gap_s

    def generate(self, task: Task, emit, cancelled: threading.Event) -> Outcome:
        for i in range(self.pieces):
            if cancelled.is_set():
                return Outcome(task.job, task.cand, finish_reason="cancelled")
            emit("x" * self.size)
            time.sleep(self.gap_s)
        return Outcome(task.job, task.cand, text="done", finish_reason="length")


@contextlib.asynccontextmanager
async def session(ctx, backend, liveness: int = 3, router_hwm: int | None = None, **config):
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    if router_hwm is not None:
        router.setsockopt(zmq.RCVHWM, router_hwm)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    config = SessionConfig(f"tcp://127.0.0.1:{port}", heartbeat_s=HB, liveness=liveness,
                           **{"reconnect_min_s": 0.01, "reconnect_max_s": 0.05, **config})
    worker = WorkerSession(ctx, config, WorkerProfile(name="w", seed_variation=True), backend)
    task = asyncio.create_task(worker.run())
    try:
        yield router, worker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        router.close()


async def next_msg(router, skip=(Heartbeat,), timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        left = int((deadline - time.monotonic()) * 1000)
        assert left > 0 and await router.poll(left), "the worker sent nothing in time"
        identity, *frames = await router.recv_multipart()
        _, msg = decode(frames)
        if not isinstance(msg, skip):
            return identity, msg


def request(job: str = "j1") -> list[bytes]:
    task = Task(job, 0, 7, Sampling(prompt="hi", max_tokens=4))
    return WorkerRequest(b"client-1", (pack(task.to_map()),)).to_frames()


def test_ready_carries_the_profile_and_a_request_streams_then_ends(ctx):
    async def body():
        async with session(ctx, SlowBackend(pieces=3)) as (router, _):
            identity, ready = await next_msg(router)
            assert isinstance(ready, Ready) and ready.service == b"generate"
            assert WorkerProfile.from_frame(ready.profile, "x").name == "w"
            await router.send_multipart([identity, *request()])
            replies = []
            while not (replies and replies[-1].final):
                _, msg = await next_msg(router)
                assert msg.client == b"client-1"
                replies.append(msg)
            chunks = [unpack(r.body[0]) for r in replies[:-1]]  # paced: pieces may join
            assert "".join(c["text"] for c in chunks) == "p0 p1 p2 "
            assert chunks[0]["seq"] == 0 and sum(c.get("tokens", 1) for c in chunks) == 3
            assert unpack(replies[-1].body[0])["finish_reason"] == "stop"
    run(body())


def test_heartbeats_flow_while_the_model_thinks(ctx):
    async def body():
        async with session(ctx, SlowBackend(think_s=0.6, pieces=1)) as (router, _):
            identity, _ = await next_msg(router)
            await router.send_multipart([identity, *request()])
            beats = 0
            while True:
                _, msg = await next_msg(router, skip=())
                if isinstance(msg, Heartbeat):
                    beats += 1
                    await router.send_multipart([identity, F.WORKER, F.W_HEARTBEAT])
                elif msg.final:
                    break
            assert beats >= 5  # 0.6 s of thinking at a 0.05 s interval
    run(body())


def test_cancel_stops_generation_with_a_final(ctx):
    async def body():
        async with session(ctx, SlowBackend(pieces=200, gap_s=0.02)) as (router, _):
            identity, _ = await next_msg(router)
            await router.send_multipart([identity, *request()])
            await next_msg(router)  # the first piece
            await router.send_multipart([identity, *Cancel(b"client-1").to_frames()])
            while True:
                _, msg = await next_msg(router)
                if msg.final:
                    break
            assert unpack(msg.body[0])["finish_reason"] == "cancelled"
    run(body())


def test_disconnect_and_silence_both_make_the_worker_register_again(ctx):
    async def body():
        async with session(ctx, SlowBackend(), liveness=2) as (router, worker):
            identity, _ = await next_msg(router)
            await router.send_multipart([identity, *Disconnect().to_frames()])
            identity2, again = await next_msg(router)
            assert isinstance(again, Ready) and identity2 != identity
            # now say nothing at all: after 2 x 0.05 s the worker gives up and starts over
            _, third = await next_msg(router)
            assert isinstance(third, Ready) and worker.connections >= 3
    run(body())


def test_a_bad_request_body_gets_an_error_final_and_the_worker_serves_on(ctx):
    async def body():
        async with session(ctx, SlowBackend(pieces=1)) as (router, _):
            identity, _ = await next_msg(router)
            bad = pack({"job": "j9", "cand": 1, "seed": "nope", "prompt": "x"})
            await router.send_multipart([identity, F.WORKER, F.W_REQUEST, b"c", b"", bad])
            _, msg = await next_msg(router)
            result = unpack(msg.body[0])
            assert msg.final and result["job"] == "j9" and "'seed'" in result["error"]
            await router.send_multipart([identity, F.WORKER, b"\x99"])  # garbage: dropped
            await router.send_multipart([identity, *request("j10")])
            while True:
                _, msg = await next_msg(router)
                if msg.final:
                    break
            assert unpack(msg.body[0])["job"] == "j10"
    run(body())


def test_ready_carries_the_heartbeat_interval(ctx):
    async def body():
        async with session(ctx, SlowBackend()) as (router, _):
            _, ready = await next_msg(router)
            assert WorkerProfile.from_frame(ready.profile, "x").heartbeat_s == HB
    run(body())


def test_a_broker_that_refuses_at_once_makes_the_back_off_double(ctx):
    async def body():
        async with session(ctx, SlowBackend(), reconnect_min_s=0.05, reconnect_max_s=5.0) \
                as (router, worker):
            # Given a broker that answers every READY with DISCONNECT
            for _ in range(4):
                identity, ready = await next_msg(router, timeout_s=20.0)
                assert isinstance(ready, Ready)
                await router.send_multipart([identity, *Disconnect().to_frames()])
            # Then each pause before reconnecting is twice the one before
            assert list(worker.pauses_s)[:3] == [0.05, 0.1, 0.2]
            # And once a broker accepts the worker (a HEARTBEAT), the back-off starts over
            identity, _ = await next_msg(router, timeout_s=20.0)
            await router.send_multipart([identity, F.WORKER, F.W_HEARTBEAT])
            await router.send_multipart([identity, *Disconnect().to_frames()])
            await next_msg(router, timeout_s=20.0)
            assert worker.pauses_s[-1] == 0.05
    run(body())


def test_a_broker_that_stops_reading_does_not_block_the_worker(ctx):
    async def body():
        # Given a broker that takes a request, then hangs: it neither reads nor speaks
        # (1 s of silence to notice: the send queue is full long before, on any machine)
        backend = FloodBackend(pieces=4000, size=32 * 1024)
        async with session(ctx, backend, liveness=20, router_hwm=1) as (router, worker):
            identity, _ = await next_msg(router)
            await router.send_multipart([identity, *request()])
            # Then the worker's loop never waits on its full send queue: it notices the
            # silence and connects again
            deadline = time.monotonic() + 15.0
            while worker.connections < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert worker.connections >= 2, "the worker never noticed the silence"
    run(body())


def test_a_broker_that_reads_late_but_lives_still_gets_the_final(ctx):
    async def body():
        # Given a broker that is busy for a while: it beats but does not read, so the
        # worker's send queue fills and the FINAL cannot go at once
        backend = FloodBackend(pieces=3000, size=32 * 1024)
        async with session(ctx, backend, liveness=20, router_hwm=1) as (router, worker):
            identity, _ = await next_msg(router)
            await router.send_multipart([identity, *request()])
            for _ in range(20):
                await router.send_multipart([identity, *Heartbeat().to_frames()])
                await asyncio.sleep(HB)
            # When it reads again, Then the FINAL is there, on the same connection
            deadline = time.monotonic() + 30.0
            final = None
            while final is None and time.monotonic() < deadline:
                _, msg = await next_msg(router, timeout_s=10.0)
                if isinstance(msg, WorkerReply) and msg.final:
                    final = unpack(msg.body[0])
            assert final is not None and final["text"] == "done"
            assert worker.connections == 1
    run(body())


async def bind_when_free(sock, endpoint: str, timeout_s: float = 5.0) -> None:
    """Bind where a socket just closed: ZeroMQ releases the port in its own time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return sock.bind(endpoint)
        except zmq.ZMQError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


def test_a_new_broker_gets_nothing_of_the_vanished_brokers_job(ctx):
    async def body():
        backend = FloodBackend(pieces=5000, gap_s=0.001)
        async with session(ctx, backend, liveness=5) as (router, worker):
            identity, _ = await next_msg(router)
            await router.send_multipart([identity, *request("old")])
            for _ in range(3):
                await next_msg(router)  # the old job streams
            # When the broker vanishes and a new one takes its port
            router.close()
            new = ctx.socket(zmq.ROUTER)
            new.setsockopt(zmq.LINGER, 0)
            try:
                await bind_when_free(new, worker.config.broker)
                # Then the worker registers again, and no piece of the old job arrives there
                seen = []
                while not (seen and isinstance(seen[-1], Ready)):
                    identity, msg = await next_msg(new, timeout_s=10.0)
                    seen.append(msg)
                end = time.monotonic() + 10 * HB
                while (left := end - time.monotonic()) > 0:
                    if await new.poll(int(left * 1000) + 1):
                        _, *frames = await new.recv_multipart()
                        seen.append(decode(frames)[1])
                    await new.send_multipart([identity, F.WORKER, F.W_HEARTBEAT])
                replies = [m for m in seen if hasattr(m, "final")]
                assert not replies, f"{len(replies)} reply(ies) of the old job reached the new broker"
            finally:
                new.close()
    run(body())


class FailingBackend:
    name, model = "fake", "fake-model"

    def generate(self, task: Task, emit, cancelled: threading.Event) -> Outcome:
        raise RuntimeError("llama_decode returned -1")


def test_a_failed_generation_is_one_log_line_and_a_peer_error(ctx, caplog):
    async def body():
        async with session(ctx, FailingBackend()) as (router, _):
            identity, _ = await next_msg(router)
            await router.send_multipart([identity, *request()])
            _, msg = await next_msg(router)
            return unpack(msg.body[0])
    with caplog.at_level("INFO", logger="worker.generation"):
        result = run(body())
    assert result["error"] == "generation failed: llama_decode returned -1"
    assert result["error_kind"] == "peer"
    failed = [r for r in caplog.records if "generation failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None
    assert "llama_decode returned -1" in failed[0].getMessage()
