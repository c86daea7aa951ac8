"""The fuzz harness: hostile traffic at a real broker and at a real worker session, with
honest questions asked through the barrage and their answers checked.

    python -m tests.fuzz_harness --seconds 60      # a broker and synthetic workers of its own
    python -m tests.fuzz_harness --seconds 600 --broker tcp://127.0.0.1:7555 --big
        (a running broker with `python -m worker.synthetic --tokens 4` attached)

Broker: strangers on several connections send what tests/fuzz_hostile.py draws, two rogue
workers answer their jobs wrongly and a vandal client feeds them (tests/fuzz_peers.py);
meanwhile honest questions must get the right answer, every vandal job exactly one FINAL.
Worker: a ROUTER plays a mad broker at a WorkerSession with the synthetic backend; between
bursts an honest REQUEST must get the right FINAL. tests/test_fuzz.py runs both briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

import click
import zmq
import zmq.asyncio

from common import frames as F
from common.bodies import Sampling, Task
from common.codec import pack, unpack
from common.messages import Heartbeat, Ready, WorkerReply, WorkerRequest, decode_worker
from common.profile import WorkerProfile
from tests.fuzz_hostile import Hostile, big_bombs
from tests.fuzz_peers import (SYNTH_MODEL, SYNTH_TOKENS, Rogue, Vandal, ask, drain,
                              expected_text, send_now, socket)
from tests.wire import running_broker, serving
from worker.session import SessionConfig, WorkerSession
from worker.synthetic import SyntheticBackend

FAST_HB_S = 0.2
STRANGERS = 4
BURST = 50  # hostile messages between looks at the rogues, the vandal and the clock


@dataclass
class Report:
    hostile: int = 0     # hostile messages sent
    answered: int = 0    # honest questions answered right
    vandal_jobs: int = 0
    vandal_finals: int = 0
    extra: dict = field(default_factory=dict)


# -- the broker ---------------------------------------------------------------------------------
async def fuzz_broker(ctx, endpoint: str, *, messages: int = 0, seconds: float = 0.0,
                      seed: int = 0, big: bool = False) -> Report:
    """Throw `messages` hostile messages (or for `seconds`) at a broker that has a synthetic
    worker; honest questions run all along and once after. Raises if any goes wrong."""
    await until_serving(ctx, endpoint, SYNTH_MODEL)
    hostile, report = Hostile(seed), Report()
    strangers = [socket(ctx, endpoint) for _ in range(STRANGERS)]
    rogues = [Rogue(ctx, endpoint, f"rogue-{i}", hostile) for i in range(2)]
    rogues[0].other, rogues[1].other = rogues[1], rogues[0]
    vandal = Vandal(socket(ctx, endpoint))
    stop = asyncio.Event()
    honest = asyncio.create_task(_honest(ctx, endpoint, stop, report))
    bombs = big_bombs() if big else []
    end = time.monotonic() + seconds
    try:
        while (report.hostile < messages or time.monotonic() < end) and not honest.done():
            for _ in range(BURST):
                send_now(hostile.pick(strangers), hostile.to_broker())
                report.hostile += 1
            if bombs and report.hostile % (BURST * 20) == 0:
                await _bomb(strangers[0], bombs[report.hostile // (BURST * 20) % len(bombs)])
            vandal.ask(report.hostile)
            await _look(strangers, rogues, vandal)
        stop.set()
        await honest
        await ask(ctx, endpoint, seed=7)  # and after the barrage
        report.answered += 1
        await _vandal_done(strangers, rogues, vandal)
    finally:
        honest.cancel()
        for sock in strangers + [vandal.sock]:
            sock.close()
        for rogue in rogues:
            rogue.close()
    report.vandal_jobs, report.vandal_finals = vandal.asked, vandal.finals
    return report


async def until_serving(ctx, endpoint: str, model: str, timeout_s: float = 30.0) -> None:
    """Wait until a live peer of the broker serves this model."""
    from tests.wire import status
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        peers = (await status(ctx, endpoint))["peers"]
        if any(p["live"] and (p["profile"] or {}).get("model") == model for p in peers):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no worker for model '{model}' joined the broker at {endpoint}")


async def _honest(ctx, endpoint: str, stop: asyncio.Event, report: Report) -> None:
    seed = 0
    while not stop.is_set():
        await ask(ctx, endpoint, seed)
        report.answered += 1
        seed += 1


async def _look(strangers, rogues, vandal) -> None:
    """Let the broker and the others have a turn; read what came back."""
    await asyncio.sleep(0.001)
    for sock in strangers:
        drain(sock)
    for rogue in rogues:
        rogue.pump()
    vandal.pump()


async def _bomb(sock, frame: bytes) -> None:
    """One 16 MiB bomb, then wait for the broker to have read it (a status round trip)."""
    await sock.send_multipart([F.CLIENT, F.C_REQUEST, F.SERVICE_GENERATE, frame])
    await sock.send_multipart([F.CLIENT, F.C_REQUEST, F.SERVICE_STATUS, pack({})])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await sock.poll(100) and any(F.SERVICE_STATUS in f for f in drain(sock)):
            return
    raise AssertionError("the broker did not answer status after a bomb")


async def _vandal_done(strangers, rogues, vandal, timeout_s: float = 60.0) -> None:
    """Every vandal job ends in one FINAL (its deadline is 1 s), and no more come."""
    deadline = time.monotonic() + timeout_s
    while vandal.finals < vandal.asked and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        await _look(strangers, rogues, vandal)
    for _ in range(10):  # a little longer: a duplicate would show now
        await asyncio.sleep(0.05)
        await _look(strangers, rogues, vandal)
    assert vandal.finals == vandal.asked, \
        f"{vandal.asked} vandal jobs ended in {vandal.finals} FINALs"


# -- the worker ---------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def worker_under_test(ctx, tokens: int = SYNTH_TOKENS):
    """A WorkerSession with the synthetic backend, connected to a ROUTER we play."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    config = SessionConfig(f"tcp://127.0.0.1:{port}", heartbeat_s=FAST_HB_S,
                           reconnect_min_s=0.05, reconnect_max_s=0.2)
    profile = WorkerProfile(name="fuzzed", node_id="fuzzed", model=SYNTH_MODEL, cancel=True)
    session = WorkerSession(ctx, config, profile, SyntheticBackend(tokens))
    try:
        async with serving(session.run()) as (task,):
            yield MadBroker(router, task), session
    finally:
        router.close()


class MadBroker:
    """The ROUTER side: knows the worker's current identity, beats, asks and checks."""

    def __init__(self, router, task: asyncio.Task):
        self.router, self.task, self.identity = router, task, None
        self.asked = 0

    async def recv(self, timeout_s: float = 30.0) -> tuple[bytes, object]:
        """The worker's next message (not a heartbeat); we beat while we wait."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert not self.task.done(), f"the worker session died: {self.task!r}"
            if self.identity is not None:
                send_now(self.router, [self.identity, *Heartbeat().to_frames()])
            if await self.router.poll(int(FAST_HB_S * 500)):
                identity, *frames = await self.router.recv_multipart()
                msg = decode_worker(frames)
                if isinstance(msg, Ready):
                    self.identity = identity  # (re)registered: the worker starts over
                if not isinstance(msg, Heartbeat):
                    return identity, msg
        raise AssertionError(f"the worker sent nothing in {timeout_s} s")

    async def registered(self) -> None:
        while not isinstance((await self.recv())[1], Ready):
            pass

    def send(self, frames: list[bytes]) -> None:
        send_now(self.router, [self.identity, *frames])

    async def honest(self) -> None:
        """One honest REQUEST; its FINAL must come, right. A REQUEST that found the worker
        busy (with a hostile one) is sent again once that one's FINAL is in."""
        self.asked += 1
        seed, client = self.asked, b"honest-%d" % self.asked
        task = Task(f"honest{seed}", 0, seed, Sampling(prompt="q", max_tokens=SYNTH_TOKENS))
        request = WorkerRequest(client, (pack(task.to_map()),)).to_frames()
        self.send(request)
        while True:
            _, msg = await self.recv()
            if isinstance(msg, Ready):
                self.send(request)  # it reconnected: ask the new connection
            elif isinstance(msg, WorkerReply) and msg.final:
                if msg.client == client:
                    text = unpack(msg.body[0]).get("text")
                    assert text == expected_text(seed), f"wrong answer {text!r}"
                    return
                self.send(request)  # a hostile request's end: ours may have found it busy


async def fuzz_worker(ctx, *, messages: int = 0, seconds: float = 0.0, seed: int = 0) -> dict:
    """Throw hostile messages at a worker session; an honest REQUEST after every burst.
    Returns what the session counted as refused."""
    hostile = Hostile(seed)
    async with worker_under_test(ctx) as (broker, session):
        await broker.registered()
        sent, end = 0, time.monotonic() + seconds
        while sent < messages or time.monotonic() < end:
            for _ in range(BURST):
                broker.send(hostile.to_worker())
                sent += 1
            await broker.honest()
        await broker.honest()
        assert not broker.task.done()
        return {"hostile": sent, "answered": broker.asked, **session.rejected.to_map()}


# -- on its own -----------------------------------------------------------------------------
async def _own_broker_and_workers(ctx, seconds: float, seed: int, big: bool) -> Report:
    async with running_broker(ctx, heartbeat_s=FAST_HB_S) as broker:
        profile = WorkerProfile(name="fuzz-synthetic", node_id="fuzz-synthetic",
                                model=SYNTH_MODEL, seed_variation=True, cancel=True)
        config = SessionConfig(broker.endpoint, heartbeat_s=FAST_HB_S)
        async with serving(*(WorkerSession(ctx, config, profile,
                                           SyntheticBackend(SYNTH_TOKENS)).run()
                             for _ in range(2))):
            report = await fuzz_broker(ctx, broker.endpoint, seconds=seconds, seed=seed, big=big)
            report.extra = broker._broker_info(time.monotonic())
            return report


@click.command()
@click.option("--seconds", type=float, default=60.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--broker", default=None, help="A running broker (with a synthetic worker).")
@click.option("--big", is_flag=True, help="Throw 16 MiB msgpack bombs too.")
@click.option("--worker/--no-worker", default=True, help="Fuzz a worker session as well.")
def main(seconds: float, seed: int, broker: str | None, big: bool, worker: bool) -> None:
    """Fuzz a broker (and a worker session) for a while; exits 1 on the first failure."""
    async def body() -> dict:
        ctx = zmq.asyncio.Context()
        try:
            if broker:
                report = await fuzz_broker(ctx, broker, seconds=seconds, seed=seed, big=big)
            else:
                report = await _own_broker_and_workers(ctx, seconds, seed, big)
            out = {"broker": report.__dict__}
            if worker:
                out["worker"] = await fuzz_worker(ctx, seconds=seconds, seed=seed)
            return out
        finally:
            ctx.destroy(linger=0)
    click.echo(json.dumps(asyncio.run(body()), indent=2, default=str))


if __name__ == "__main__":
    main()
