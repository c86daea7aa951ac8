"""Raw MDP/0.2 peers for broker tests: a client and a scriptable worker on real sockets."""

from __future__ import annotations

import asyncio
import contextlib

import zmq
import zmq.asyncio

from broker.server import Broker, BrokerConfig
from common import frames as F
from common.codec import pack, unpack
from common.messages import ClientRequest, Ready, decode_client, decode_worker, split_envelope
from common.profile import WorkerProfile


@contextlib.asynccontextmanager
async def serving(*coros):
    """Each coroutine runs as a task for the block (which gets the tasks); then cancelled."""
    tasks = [asyncio.create_task(coro) for coro in coros]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_broker(ctx, **config):
    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:*", **config), ctx)
    broker.bind()
    async with serving(broker.run()):
        yield broker


async def registered(broker: Broker, slots: int = 1, timeout_s: float = 20.0) -> None:
    """Until the in-process broker holds `slots` worker slots. A FakeWorker's READY leaves
    before its connection is up, so a request sent right after it may reach the broker
    first (and find no worker): wait for this, never for a fixed sleep."""
    for _ in range(int(timeout_s / 0.01)):
        if len(broker.registry) >= slots:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the broker holds {len(broker.registry)} slot(s), not {slots}")


def dealer(ctx, endpoint: str) -> zmq.asyncio.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


async def recv(sock, timeout_s: float = 20.0) -> list[bytes]:
    if not await sock.poll(int(timeout_s * 1000), zmq.POLLIN):
        raise AssertionError(f"nothing received within {timeout_s} s")
    return await sock.recv_multipart()


async def client_final(sock, timeout_s: float = 20.0):
    """Read client replies until the FINAL; returns (partials, final) as decoded messages."""
    partials = []
    while True:
        msg = decode_client(split_envelope(await recv(sock, timeout_s))[1])
        if msg.final:
            return partials, msg
        partials.append(msg)


class FakeWorker:
    """A worker that speaks raw MDP/0.2; tests drive it by hand."""

    def __init__(self, ctx, endpoint: str, name: str, service: bytes = F.SERVICE_GENERATE,
                 delimited: bool = False, seed_variation: bool = True, anonymous: bool = False,
                 **profile):
        self.sock = dealer(ctx, endpoint)
        self.prefix = [b""] if delimited else []
        self.service = service
        self.profile = None if anonymous else WorkerProfile(
            name=name, **{"node_id": name, "seed_variation": seed_variation, "cancel": True,
                          **profile})
        self.beats: asyncio.Task | None = None

    async def ready(self, heartbeat_s: float | None = None) -> None:
        """Send READY; with heartbeat_s, keep sending HEARTBEAT like a live worker would."""
        frame = self.profile.to_frame() if self.profile is not None else None
        await self.send(Ready(self.service, frame).to_frames())
        if heartbeat_s is not None:
            self.beats = asyncio.create_task(self._beat(heartbeat_s))

    async def _beat(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.send([F.WORKER, F.W_HEARTBEAT])

    async def send(self, frames: list[bytes]) -> None:
        await self.sock.send_multipart(self.prefix + frames)

    async def next(self, skip_heartbeats: bool = True, timeout_s: float = 20.0):
        while True:
            frames = await recv(self.sock, timeout_s)
            delimited, frames = split_envelope(frames)
            assert delimited == bool(self.prefix), "broker answered in the wrong framing"
            msg = decode_worker(frames)
            if not (skip_heartbeats and type(msg).__name__ == "Heartbeat"):
                return msg

    async def reply(self, client: bytes, body: dict, final: bool) -> None:
        command = F.W_FINAL if final else F.W_PARTIAL
        await self.send([F.WORKER, command, client, b"", pack(body)])

    def close(self) -> None:
        if self.beats is not None:
            self.beats.cancel()
        self.sock.close(linger=0)


def body_of(msg) -> dict:
    return unpack(msg.body[0])


async def status(ctx, endpoint: str) -> dict:
    _, final = await ask_once(ctx, endpoint, F.SERVICE_STATUS, pack({}))
    return body_of(final)


async def ask_once(ctx, endpoint: str, service: bytes, *body: bytes, timeout_s: float = 20.0):
    """One request on a fresh DEALER: (partials, final)."""
    sock = dealer(ctx, endpoint)
    try:
        await sock.send_multipart(ClientRequest(service, body).to_frames())
        return await client_final(sock, timeout_s)
    finally:
        sock.close()
