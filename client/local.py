"""`swarm-ask --local`: a whole swarm in this process, on loopback.

An embedded broker binds a free loopback port, one worker node loads the model and
connects to it, the question is asked through the ordinary client, and all of it is shut
down cleanly afterwards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import zmq.asyncio

from broker.server import Broker, BrokerConfig
from common.errors import RequestFailed
from worker.launch import Setup, load
from worker.node import WorkerNode, node_profile
from worker.session import SessionConfig

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0


@contextlib.asynccontextmanager
async def local_swarm(setup: Setup, heartbeat_s: float = 1.0,
                      timeout_s: float = 60.0) -> AsyncIterator[str]:
    """Run broker + worker in this event loop; yields the broker endpoint once slots are ready."""
    ctx = zmq.asyncio.Context()
    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:*", heartbeat_s=heartbeat_s,
                                 timeout_s=timeout_s), ctx)
    endpoint = broker.bind()
    backends = await asyncio.to_thread(load, setup)
    instances = len(backends)
    profile = node_profile("local", backends[0], instances, setup.plan.seed_variation.value,
                           socket.gethostname(), hardware=setup.hardware,
                           gpu_layers=setup.plan.gpu_layers.value)
    node = WorkerNode(SessionConfig(endpoint, heartbeat_s=heartbeat_s), profile, backends, ctx)
    tasks = [asyncio.create_task(broker.run()), asyncio.create_task(node.run())]
    try:
        await _until_ready(broker, instances)
        yield endpoint
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ctx.term()


async def _until_ready(broker: Broker, slots: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(broker.registry) < slots:
        if time.monotonic() > deadline:
            raise RequestFailed(f"the local worker did not register within {READY_TIMEOUT_S:g} s")
        await asyncio.sleep(0.01)


@contextlib.contextmanager
def local_swarm_thread(setup: Setup, timeout_s: float = 60.0) -> Iterator[str]:
    """local_swarm on its own thread and event loop, so each question may run its own loop
    (and a Ctrl-C in one question does not tear the swarm down); yields the endpoint."""
    ready: concurrent.futures.Future[str] = concurrent.futures.Future()
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        stop.append((asyncio.get_running_loop(), asyncio.Event()))
        try:
            async with local_swarm(setup, timeout_s=timeout_s) as endpoint:
                ready.set_result(endpoint)
                await stop[0][1].wait()
        except BaseException as e:  # hand any failure to the waiting thread, as one error
            if not ready.done():
                ready.set_exception(e)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="local-swarm", daemon=True)
    thread.start()
    try:
        yield ready.result()
    finally:
        if stop:
            loop, event = stop[0]
            loop.call_soon_threadsafe(event.set)
        thread.join(READY_TIMEOUT_S)
