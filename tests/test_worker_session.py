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
from common.messages import Cancel, Disconnect, Heartbeat, Ready, WorkerRequest, decode
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


@contextlib.asynccontextmanager
async def session(ctx, backend, liveness: int = 3):
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    config = SessionConfig(f"tcp://127.0.0.1:{port}", heartbeat_s=HB, liveness=liveness,
                           reconnect_min_s=0.01, reconnect_max_s=0.05)
    worker = WorkerSession(ctx, config, WorkerProfile(name="w", seed_variation=True), backend)
    task = asyncio.create_task(worker.run())
    try:
        yield router, worker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        router.close()


async def next_msg(router, skip=(Heartbeat,), timeout_s: float = 2.0):
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
            assert [unpack(r.body[0])["text"] for r in replies[:-1]] == ["p0 ", "p1 ", "p2 "]
            assert [unpack(r.body[0])["seq"] for r in replies[:-1]] == [0, 1, 2]
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
