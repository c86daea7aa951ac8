"""Helpers for the load and slow-reader tests: requests, a client that never reads, and the
broker's memory as the kernel sees it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable

import psutil
import zmq

from common import frames as F
from common.codec import pack
from common.messages import ClientRequest
from tests.wire import status

MB = 1_000_000


def generate(**question) -> list[bytes]:
    return ClientRequest(F.SERVICE_GENERATE, (pack(question),)).to_frames()


def status_request() -> list[bytes]:
    return ClientRequest(F.SERVICE_STATUS, (pack({}),)).to_frames()


def non_reader(ctx, endpoint: str) -> zmq.Socket:
    """A DEALER that takes one message and a few KB into its kernel buffer, then nothing."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)  # no TCP autotuning: the kernel holds little for it
    sock.connect(endpoint)
    return sock


def rss_mb(proc: subprocess.Popen) -> float:
    return psutil.Process(proc.pid).memory_info().rss / MB


async def broker_stats_until(ctx, endpoint: str, done: Callable[[dict], bool],
                             timeout_s: float = 90.0, every_s: float = 0.5) -> dict:
    """Poll swarm.status until `done(broker stats)`; the broker answering at all is part of
    what this shows (it is not blocked by the peer it waits on)."""
    stats: dict = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        stats = (await status(ctx, endpoint))["broker"]
        if done(stats):
            return stats
        await asyncio.sleep(every_s)
    raise AssertionError(f"the broker's stats never got there: {stats}")
