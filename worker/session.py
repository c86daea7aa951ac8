"""One MDP/0.2 worker session per slot: READY, heartbeats both ways, requests, reconnects.

The socket belongs to this session's task alone. Generation runs in the slot's own
thread; its pieces come back through an asyncio queue, so heartbeats keep flowing while
the model works. Silence for `heartbeat_s * liveness`, or a DISCONNECT, ends the connection;
the session reconnects with back-off doubling up to `reconnect_max_s`, back to the minimum
only once a broker accepted it. No send waits: the DEALER queues only to a live connection
(IMMEDIATE) and never reconnects by itself, so a PARTIAL a broker cannot take is dropped,
a FINAL is retried every few milliseconds for as long as the broker is alive, and nothing
of an old request reaches a new broker. Its pieces live apart: a connection's liveness and
sends in `worker.link`, the generation thread in `worker.generation`, the graceful stop in
`worker.goodbye`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import zmq
import zmq.asyncio

from common import frames as F
from common import logs
from common.bodies import Chunk, Outcome, Task
from common.codec import pack, unpack_body
from common.curve import ClientKeys
from common.errors import ProtocolError
from common.messages import (Cancel, Disconnect, Heartbeat, Ready, WorkerReply, WorkerRequest,
                             decode_worker, split_envelope)
from common.profile import WorkerProfile
from common.rejections import Rejections
from worker.backend import Backend
from worker.generation import SlotThread, Work, coalesce, refused
from worker.goodbye import GOODBYE_LINGER_MS, SHUTTING_DOWN, goodbye, read_out, say_goodbye
from worker.handoff import INTERVAL_S as STREAM_INTERVAL_S
from worker.link import Link, send

log = logging.getLogger(__name__)

SEND_HWM = 1000  # messages queued per connection; past that, PARTIALs are dropped
__all__ = ["GOODBYE_LINGER_MS", "SessionConfig", "WorkerSession"]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    broker: str | None = F.DEFAULT_BROKER_CONNECT  # None: ask find_broker
    # where the broker is now (mDNS), asked before each connection; `broker` when None
    find_broker: Callable[[], Awaitable[str]] | None = None
    service: bytes = F.SERVICE_GENERATE
    heartbeat_s: float = F.DEFAULT_HEARTBEAT_S
    liveness: int = F.DEFAULT_LIVENESS
    reconnect_min_s: float = F.RECONNECT_MIN_S
    reconnect_max_s: float = F.RECONNECT_MAX_S
    curve: ClientKeys | None = None  # --secure: talk CURVE to the pinned broker only
    stream_interval_s: float = STREAM_INTERVAL_S  # pieces handed over at most so often


class WorkerSession:
    def __init__(self, ctx: zmq.asyncio.Context, config: SessionConfig, profile: WorkerProfile,
                 backend: Backend):
        self.ctx, self.config, self.backend = ctx, config, backend
        self.profile = replace(profile, heartbeat_s=config.heartbeat_s)
        self.thread = SlotThread(backend, profile.slot, self._kv,  # where generation runs
                                 config.stream_interval_s)
        self.connections = 0
        self.backoff_s = config.reconnect_min_s  # the pause after a refused connection
        self.pauses_s: deque[float] = deque(maxlen=32)  # the latest pauses taken, oldest first
        self.endpoint = config.broker  # the broker of the latest connection
        self.rejected = Rejections()  # what the broker sent that this slot refused, by reason
        self.stop_by: float | None = None  # a graceful stop was asked for: the grace ends then
        self._stop_asked = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._link: Link | None = None  # the connection being served, if any

    def stop(self, grace_s: float) -> None:
        """Stop gracefully: finish the candidate in hand within `grace_s` (a REQUEST that
        comes meanwhile is refused), say DISCONNECT, and return from `run`. A slot that is
        between connections returns at once."""
        if self.stop_by is not None:
            return
        self.stop_by = time.monotonic() + grace_s
        self._stop_asked.set()
        if self._link is None and self._task is not None:
            self._task.cancel()  # nothing in hand: the goodbye in `_connection` is all

    async def run(self) -> None:
        cfg = self.config
        self._task = asyncio.current_task()
        try:
            while self.stop_by is None:
                accepted = await self._connection()
                if self.stop_by is not None:
                    return
                # refused or unheard: the pause doubles; accepted: it starts over
                pause = cfg.reconnect_min_s if accepted else self.backoff_s
                self.backoff_s = min(pause * 2, cfg.reconnect_max_s)
                self.pauses_s.append(pause)
                log.info("reconnecting in %.2g s (last to %s)", pause, self.endpoint,
                         extra=self._kv())
                await asyncio.sleep(pause)
        except asyncio.CancelledError:
            if self.stop_by is None:
                raise  # cancelled from outside: not ours to swallow
        finally:
            self.thread.shutdown()

    async def _connection(self) -> bool:
        """One connection's life; True if a broker accepted it (the back-off starts over)."""
        if self.config.find_broker is not None:
            self.endpoint = await self.config.find_broker()
        sock = self._socket()
        link = None
        try:
            if not await self._register(sock):
                return False
            link = self._link = Link(self.config.heartbeat_s, self.config.liveness)
            return await self._serve(sock, link)
        except asyncio.CancelledError:
            say_goodbye(sock)  # stopping: the broker re-dispatches now, not after a liveness
            raise
        finally:
            self._link = None
            if link is not None:
                self._abandon(link)
            sock.close()

    async def _serve(self, sock: zmq.asyncio.Socket, link: Link) -> bool:
        """Serve the broker until it says goodbye, falls silent or stops taking FINALs."""
        recv = asyncio.ensure_future(sock.recv_multipart())
        got = asyncio.ensure_future(link.queue.get())
        stop = asyncio.ensure_future(self._stop_asked.wait())
        try:
            while True:
                waiting = {recv, got} if stop.done() else {recv, got, stop}
                await asyncio.wait(waiting, timeout=self._wait_s(link),
                                   return_when=asyncio.FIRST_COMPLETED)
                if link.unsent is not None and send(sock, link.unsent):
                    link.unsent = None
                    link.sent_now()
                if recv.done():
                    frames, recv = recv.result(), asyncio.ensure_future(sock.recv_multipart())
                    link.heard_now()
                    if self._on_broker(frames, link):
                        return link.was_accepted()
                if got.done():  # with every piece waiting behind it, joined
                    items, got = _waiting(got.result(), link.queue), asyncio.ensure_future(
                        link.queue.get())
                    for item in coalesce(items):
                        self._forward(sock, link, *item)
                if link.broker_silent():
                    log.warning("broker silent for %g s", link.expiry_s, extra=self._kv())
                    return link.was_accepted()
                if link.beat_due():
                    send(sock, Heartbeat().to_frames())  # one the broker cannot take: dropped
                    link.sent_now()
                if self.stop_by is not None and goodbye(sock, link, self.stop_by, self._kv):
                    recv = await read_out(sock, recv)
                    return link.was_accepted()
        finally:
            recv.cancel()
            got.cancel()
            stop.cancel()

    def _wait_s(self, link: Link) -> float:
        wait = link.wait_s()
        if self.stop_by is None:
            return wait
        return min(wait, max(0.0, self.stop_by - time.monotonic()))  # the grace's end

    def _abandon(self, link: Link) -> None:
        """The connection is over: stop its request; nothing of it goes to the next one."""
        if link.work is not None:
            link.work.abandoned = True
            link.work.cancelled.set()
        if link.dropped:
            log.info("%d PARTIAL(s) the broker did not take", link.dropped, extra=self._kv())
        if self.rejected.total():
            log.info("refused from brokers so far: %s", self.rejected, extra=self._kv())

    def _socket(self) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, F.MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.IMMEDIATE, 1)         # queue only to a completed connection
        sock.setsockopt(zmq.RECONNECT_IVL, -1)    # one socket, one connection: we reconnect
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        if self.config.curve is not None:
            self.config.curve.apply(sock)
        sock.connect(self.endpoint)
        self.connections += 1
        return sock

    async def _register(self, sock: zmq.asyncio.Socket) -> bool:
        """Send READY once the connection is up; False if it is not up within a liveness."""
        wait_s = self.config.heartbeat_s * self.config.liveness
        ready = Ready(self.config.service, self.profile.to_frame()).to_frames()
        try:
            await asyncio.wait_for(sock.send_multipart(ready), wait_s)
        except asyncio.TimeoutError:
            why = "" if self.config.curve is None else (
                " (a secure one: is this worker's key allowed there, and is it the pinned broker?)")
            log.info("no connection to %s in %g s%s", self.endpoint, wait_s, why,
                     extra=self._kv())
            return False
        return True

    def _forward(self, sock, link: Link, owner: Work, out: Chunk | Outcome,
                 final: bool) -> None:
        """Send a piece or outcome of the request in flight, never waiting; pieces of an
        abandoned request are dropped, and so are pieces the broker cannot take now; a
        FINAL it cannot take now waits in `link.unsent` (the loop retries it)."""
        if owner is not link.work:
            return
        frames = WorkerReply(owner.client, (pack(out.to_map()),), final).to_frames()
        if final:
            link.work = None
        if send(sock, frames):
            link.sent_now()  # a reply counts as a heartbeat
        elif final:
            log.info("the broker cannot take the FINAL yet; retrying",
                     extra=self._kv(job=out.job, cand=out.cand))
            link.unsent = frames
        else:
            link.dropped += 1
            log.debug("dropped a PARTIAL: the broker is not taking it",
                      extra=self._kv(job=out.job, cand=out.cand))

    def _on_broker(self, frames: list[bytes], link: Link) -> bool:
        """Handle one broker message; True when the connection must start over."""
        try:
            _, frames = split_envelope(frames)
            msg = decode_worker(frames)
        except ProtocolError as e:
            self._reject("malformed", "dropped a malformed message from the broker: %s", e)
            return False
        if isinstance(msg, Disconnect):
            log.info("broker sent DISCONNECT", extra=self._kv())
            return True
        if isinstance(msg, (Heartbeat, WorkerRequest)):
            link.accepted = True
        if isinstance(msg, Cancel):
            if link.work is not None and link.work.client == msg.client:
                link.work.cancelled.set()
            else:  # it crossed our FINAL, or names another client: nothing of ours to stop
                self.rejected.add("stale_cancel")
        elif isinstance(msg, WorkerRequest):
            if self.stop_by is not None and link.work is None:  # the broker re-dispatches it
                link.work = refused(msg.client, msg.body, SHUTTING_DOWN, link.queue)
            elif link.work is None:
                link.work = self._start(msg, link.queue)
            else:
                self._reject("busy", "REQUEST while busy; ignoring it")
        elif not isinstance(msg, Heartbeat):
            self._reject("unexpected", "unexpected %s from the broker", type(msg).__name__)
        return False

    def _reject(self, reason: str, text: str, *args) -> None:
        """Count what the broker sent and we refused; log the 1st, 2nd, 4th, ... of each."""
        if self.rejected.add(reason):
            log.warning(text + " (%d so far)", *args, self.rejected[reason], extra=self._kv())

    def _kv(self, **fields) -> dict:
        """The fields of a line about this slot (and the job it names)."""
        return logs.kv(peer=self.profile.name, slot=self.profile.slot, **fields)

    def _start(self, req: WorkerRequest, queue: asyncio.Queue) -> Work:
        try:
            task = Task.from_map(unpack_body(req.body))
        except ProtocolError as e:
            self._reject("bad_request", "refused a REQUEST: %s", e)
            return refused(req.client, req.body, f"bad request: {e}", queue)
        return self.thread.start(req.client, task, queue)


def _waiting(first: tuple, queue: asyncio.Queue) -> list[tuple]:
    """`first` and whatever else the generation thread has queued meanwhile."""
    items = [first]
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
