"""One MDP/0.2 worker session per slot: READY, heartbeats both ways, requests, reconnects.

The socket belongs to this session's task alone. Generation runs in the slot's own
thread; its pieces come back through an asyncio queue, so heartbeats keep flowing while
the model works. Silence from the broker for `heartbeat_s * liveness`, or a DISCONNECT,
ends the connection; the session reconnects with back-off doubling up to `reconnect_max_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import zmq
import zmq.asyncio

from common import frames as F
from common.bodies import Chunk, Outcome, Task
from common.codec import pack, unpack_body
from common.errors import ProtocolError
from common.messages import (Cancel, Disconnect, Heartbeat, Ready, WorkerReply, WorkerRequest,
                             decode_worker, split_envelope)
from common.profile import WorkerProfile
from worker.backend import Backend

log = logging.getLogger(__name__)

GOODBYE_LINGER_MS = 200


@dataclass(frozen=True, slots=True)
class SessionConfig:
    broker: str = F.DEFAULT_BROKER_CONNECT
    service: bytes = F.SERVICE_GENERATE
    heartbeat_s: float = F.DEFAULT_HEARTBEAT_S
    liveness: int = F.DEFAULT_LIVENESS
    reconnect_min_s: float = F.RECONNECT_MIN_S
    reconnect_max_s: float = F.RECONNECT_MAX_S


@dataclass(slots=True)
class _Work:
    client: bytes
    task: Task | None
    cancelled: threading.Event


class WorkerSession:
    def __init__(self, ctx: zmq.asyncio.Context, config: SessionConfig, profile: WorkerProfile,
                 backend: Backend):
        self.ctx, self.config, self.profile, self.backend = ctx, config, profile, backend
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"slot{profile.slot}")
        self.connections = 0
        self.served = 0

    async def run(self) -> None:
        delay = self.config.reconnect_min_s
        try:
            while True:
                heard = await self._connection()
                delay = self.config.reconnect_min_s if heard else min(delay * 2, self.config.reconnect_max_s)
                log.info("slot %d: reconnecting to %s in %.2g s", self.profile.slot,
                         self.config.broker, delay)
                await asyncio.sleep(delay)
        finally:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def _connection(self) -> bool:
        """One connection's life; True if the broker ever spoke on it."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, F.MAX_MESSAGE_BYTES)
        sock.connect(self.config.broker)
        self.connections += 1
        queue: asyncio.Queue = asyncio.Queue()
        work: _Work | None = None
        heard = False
        recv = got = None
        expiry_s = self.config.heartbeat_s * self.config.liveness
        try:
            await sock.send_multipart(Ready(self.config.service, self.profile.to_frame()).to_frames())
            now = time.monotonic()
            expires_at, next_beat = now + expiry_s, now + self.config.heartbeat_s
            recv = asyncio.ensure_future(sock.recv_multipart())
            got = asyncio.ensure_future(queue.get())
            while True:
                timeout = max(0.0, min(next_beat, expires_at) - time.monotonic())
                await asyncio.wait({recv, got}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if recv.done():
                    frames = recv.result()
                    recv = asyncio.ensure_future(sock.recv_multipart())
                    heard = True
                    expires_at = time.monotonic() + expiry_s
                    work, stop = self._on_broker(frames, work, queue)
                    if stop:
                        return heard
                if got.done():
                    owner, out, final = got.result()
                    got = asyncio.ensure_future(queue.get())
                    if owner is work:  # pieces of an abandoned request are dropped
                        await self._send(sock, work.client, out, final)
                        next_beat = time.monotonic() + self.config.heartbeat_s  # a reply is a beat
                        if final:
                            work = None
                            self.served += 1
                now = time.monotonic()
                if now >= expires_at:
                    log.warning("slot %d: broker silent for %g s", self.profile.slot, expiry_s)
                    return heard
                if now >= next_beat:
                    await sock.send_multipart(Heartbeat().to_frames())
                    next_beat = now + self.config.heartbeat_s
        except asyncio.CancelledError:
            # stopping: say goodbye so the broker re-dispatches now, not after liveness runs out
            with contextlib.suppress(zmq.ZMQError):  # a plain, synchronous send: no future left behind
                zmq.Socket.send_multipart(sock, Disconnect().to_frames(), zmq.NOBLOCK)
            sock.setsockopt(zmq.LINGER, GOODBYE_LINGER_MS)
            raise
        finally:
            if work is not None:
                work.cancelled.set()
            for fut in (recv, got):
                if fut is not None:
                    fut.cancel()
            sock.close()

    async def _send(self, sock, client: bytes, out: Chunk | Outcome, final: bool) -> None:
        reply = WorkerReply(client, (pack(out.to_map()),), final)
        await sock.send_multipart(reply.to_frames())

    def _on_broker(self, frames: list[bytes], work: _Work | None,
                   queue: asyncio.Queue) -> tuple[_Work | None, bool]:
        """Handle one broker message; returns (work in flight, whether to reconnect)."""
        try:
            _, frames = split_envelope(frames)
            msg = decode_worker(frames)
        except ProtocolError as e:
            log.warning("slot %d: dropped a malformed message from the broker: %s", self.profile.slot, e)
            return work, False
        if isinstance(msg, Disconnect):
            log.info("slot %d: broker sent DISCONNECT", self.profile.slot)
            return work, True
        if isinstance(msg, Cancel):
            if work is not None:
                work.cancelled.set()
            return work, False
        if isinstance(msg, WorkerRequest):
            if work is not None:
                log.warning("slot %d: REQUEST while busy; refusing it", self.profile.slot)
                return work, False
            return self._start(msg, queue), False
        if not isinstance(msg, Heartbeat):
            log.warning("slot %d: unexpected %s from the broker", self.profile.slot, type(msg).__name__)
        return work, False

    def _start(self, req: WorkerRequest, queue: asyncio.Queue) -> _Work:
        cancelled = threading.Event()
        try:
            task = Task.from_map(unpack_body(req.body))
        except ProtocolError as e:
            body = unpack_body_loose(req.body)
            work = _Work(req.client, None, cancelled)
            queue.put_nowait((work, Outcome(str(body.get("job", "")), _int(body.get("cand")),
                                            error=f"bad request: {e}"), True))
            return work
        work = _Work(req.client, task, cancelled)
        self.executor.submit(self._generate, work, asyncio.get_running_loop(), queue)
        return work

    def _generate(self, work: _Work, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        """Runs in the slot's thread; hands pieces and the outcome to the session's loop."""
        task, seq = work.task, 0

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: the process is stopping
                work.cancelled.set()

        def emit(text: str) -> None:
            nonlocal seq
            put((work, Chunk(task.job, task.cand, seq, text), False))
            seq += 1

        if work.cancelled.is_set():
            outcome = Outcome(task.job, task.cand, error="cancelled before it started")
        else:
            try:
                outcome = self.backend.generate(task, emit, work.cancelled)
            except Exception as e:  # the model failed on this input: say so, keep serving
                log.exception("slot %d: generation failed", self.profile.slot)
                outcome = Outcome(task.job, task.cand, error=f"generation failed: {e}")
        put((work, outcome, True))


def unpack_body_loose(body: tuple[bytes, ...]) -> dict:
    try:
        return unpack_body(body)
    except ProtocolError:
        return {}


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
