"""One MDP/0.2 worker session per slot: READY, heartbeats both ways, requests, reconnects.

The socket belongs to this session's task alone. Generation runs in the slot's own
thread; its pieces come back through an asyncio queue, so heartbeats keep flowing while
the model works. Silence for `heartbeat_s * liveness`, or a DISCONNECT, ends the connection;
the session reconnects with back-off doubling up to `reconnect_max_s`, back to the minimum
only once a broker accepted it. No send waits: the DEALER queues only to a live connection
(IMMEDIATE) and never reconnects by itself, so a PARTIAL a broker cannot take is dropped,
a FINAL is retried every few milliseconds for as long as the broker is alive, and nothing
of an old request reaches a new broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import zmq
import zmq.asyncio

from common import frames as F
from common import logs
from common.bodies import ERROR_REQUEST, MAX_CANDIDATES, Chunk, Outcome, Task
from common.codec import pack, unpack_body
from common.curve import ClientKeys
from common.errors import ProtocolError
from common.messages import (Cancel, Disconnect, Heartbeat, Ready, WorkerReply, WorkerRequest,
                             decode_worker, split_envelope)
from common.profile import WorkerProfile
from common.rejections import Rejections
from worker.backend import Backend

log = logging.getLogger(__name__)

GOODBYE_LINGER_MS = 200
SEND_HWM = 1000  # messages queued per connection; past that, PARTIALs are dropped
RETRY_S = 0.005  # how soon a FINAL the broker could not take yet is sent again
MAX_JOB_ID = 64  # characters of a bad request's job id echoed back in its error FINAL
MAX_CAND = MAX_CANDIDATES * 2
SHUTTING_DOWN = "the worker is shutting down"


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


@dataclass(slots=True)
class _Work:
    client: bytes
    task: Task | None
    cancelled: threading.Event
    abandoned: bool = False  # its connection is over: its next piece ends it (see _generate)


class _Abandoned(Exception):
    """Raised into the backend by `emit` once the request's connection is over."""


class _Link:
    """One connection's liveness arithmetic and the request in flight on it."""

    def __init__(self, heartbeat_s: float, liveness: int):
        self.heartbeat_s = heartbeat_s
        self.expiry_s = heartbeat_s * liveness
        self.queue: asyncio.Queue = asyncio.Queue()  # (work, Chunk | Outcome, final) from the thread
        self.work: _Work | None = None
        self.heard = False     # the broker said anything at all
        self.accepted = False  # the broker sent a HEARTBEAT or a REQUEST: it took us on
        self.dropped = 0       # PARTIALs the broker could not take
        self.unsent: list[bytes] | None = None  # a FINAL waiting for room on the connection
        now = time.monotonic()
        self.started = now
        self.expires_at, self.next_beat = now + self.expiry_s, now + heartbeat_s

    def wait_s(self) -> float:
        wait = max(0.0, min(self.next_beat, self.expires_at) - time.monotonic())
        return min(wait, RETRY_S) if self.unsent is not None else wait

    def heard_now(self) -> None:
        self.heard = True
        self.expires_at = time.monotonic() + self.expiry_s

    def sent_now(self) -> None:
        self.next_beat = time.monotonic() + self.heartbeat_s

    def broker_silent(self) -> bool:
        return time.monotonic() >= self.expires_at

    def beat_due(self) -> bool:
        return time.monotonic() >= self.next_beat

    def was_accepted(self) -> bool:
        """Whether a broker took this connection on: it said so, or kept it for a liveness."""
        return self.accepted or (self.heard and time.monotonic() - self.started >= self.expiry_s)


class WorkerSession:
    def __init__(self, ctx: zmq.asyncio.Context, config: SessionConfig, profile: WorkerProfile,
                 backend: Backend):
        self.ctx, self.config, self.backend = ctx, config, backend
        self.profile = replace(profile, heartbeat_s=config.heartbeat_s)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"slot{profile.slot}")
        self.connections = 0
        self.backoff_s = config.reconnect_min_s  # the pause after a refused connection
        self.pauses_s: deque[float] = deque(maxlen=32)  # the latest pauses taken, oldest first
        self.endpoint = config.broker  # the broker of the latest connection
        self.rejected = Rejections()  # what the broker sent that this slot refused, by reason
        self.stop_by: float | None = None  # a graceful stop was asked for: the grace ends then
        self._stop_asked = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._link: _Link | None = None  # the connection being served, if any

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
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def _connection(self) -> bool:
        """One connection's life; True if a broker accepted it (the back-off starts over)."""
        if self.config.find_broker is not None:
            self.endpoint = await self.config.find_broker()
        sock = self._socket()
        link = None
        try:
            if not await self._register(sock):
                return False
            link = self._link = _Link(self.config.heartbeat_s, self.config.liveness)
            return await self._serve(sock, link)
        except asyncio.CancelledError:
            # stopping: say goodbye so the broker re-dispatches now, not after liveness runs out
            with contextlib.suppress(zmq.ZMQError):  # now or never: the broker may be gone too
                _send(sock, Disconnect().to_frames())
            sock.setsockopt(zmq.LINGER, GOODBYE_LINGER_MS)
            raise
        finally:
            self._link = None
            if link is not None:
                self._abandon(link)
            sock.close()

    async def _serve(self, sock: zmq.asyncio.Socket, link: "_Link") -> bool:
        """Serve the broker until it says goodbye, falls silent or stops taking FINALs."""
        recv = asyncio.ensure_future(sock.recv_multipart())
        got = asyncio.ensure_future(link.queue.get())
        stop = asyncio.ensure_future(self._stop_asked.wait())
        try:
            while True:
                waiting = {recv, got} if stop.done() else {recv, got, stop}
                await asyncio.wait(waiting, timeout=self._wait_s(link),
                                   return_when=asyncio.FIRST_COMPLETED)
                if link.unsent is not None and _send(sock, link.unsent):
                    link.unsent = None
                    link.sent_now()
                if recv.done():
                    frames, recv = recv.result(), asyncio.ensure_future(sock.recv_multipart())
                    link.heard_now()
                    if self._on_broker(frames, link):
                        return link.was_accepted()
                if got.done():
                    item, got = got.result(), asyncio.ensure_future(link.queue.get())
                    self._forward(sock, link, *item)
                if link.broker_silent():
                    log.warning("broker silent for %g s", link.expiry_s, extra=self._kv())
                    return link.was_accepted()
                if link.beat_due():
                    _send(sock, Heartbeat().to_frames())  # one the broker cannot take: dropped
                    link.sent_now()
                if self.stop_by is not None and self._goodbye(sock, link):
                    recv = await _read_out(sock, recv)
                    return link.was_accepted()
        finally:
            recv.cancel()
            got.cancel()
            stop.cancel()

    def _wait_s(self, link: "_Link") -> float:
        wait = link.wait_s()
        if self.stop_by is None:
            return wait
        return min(wait, max(0.0, self.stop_by - time.monotonic()))  # the grace's end

    def _goodbye(self, sock: zmq.asyncio.Socket, link: "_Link") -> bool:
        """Stopping: once the candidate in hand is answered (or the grace is over) say
        DISCONNECT, so the broker drops this slot now; True when it is said."""
        work = link.work
        if work is not None or link.unsent is not None:
            if time.monotonic() < self.stop_by:
                return False
            job = work.task.job if work is not None and work.task is not None else None
            log.warning("slot %d: the shutdown grace is over; leaving the candidate in hand to "
                        "the broker", self.profile.slot, extra=logs.kv(job=job))
        with contextlib.suppress(zmq.ZMQError):
            _send(sock, Disconnect().to_frames())
        sock.setsockopt(zmq.LINGER, GOODBYE_LINGER_MS)  # the FINAL and the goodbye still go
        log.info("slot %d: stopped; told the broker DISCONNECT", self.profile.slot)
        return True

    def _abandon(self, link: "_Link") -> None:
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

    def _forward(self, sock, link: "_Link", owner: _Work, out: Chunk | Outcome,
                 final: bool) -> None:
        """Send a piece or outcome of the request in flight, never waiting; pieces of an
        abandoned request are dropped, and so are pieces the broker cannot take now; a
        FINAL it cannot take now waits in `link.unsent` (the loop retries it)."""
        if owner is not link.work:
            return
        frames = WorkerReply(owner.client, (pack(out.to_map()),), final).to_frames()
        if final:
            link.work = None
        if _send(sock, frames):
            link.sent_now()  # a reply counts as a heartbeat
        elif final:
            log.info("the broker cannot take the FINAL yet; retrying",
                     extra=self._kv(job=out.job, cand=out.cand))
            link.unsent = frames
        else:
            link.dropped += 1
            log.debug("dropped a PARTIAL: the broker is not taking it",
                      extra=self._kv(job=out.job, cand=out.cand))

    def _on_broker(self, frames: list[bytes], link: "_Link") -> bool:
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
                link.work = _Work(msg.client, None, threading.Event())
                link.queue.put_nowait((link.work, _refusal(msg.body, SHUTTING_DOWN), True))
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

    def _start(self, req: WorkerRequest, queue: asyncio.Queue) -> _Work:
        cancelled = threading.Event()
        try:
            task = Task.from_map(unpack_body(req.body))
        except ProtocolError as e:
            self._reject("bad_request", "refused a REQUEST: %s", e)
            work = _Work(req.client, None, cancelled)
            queue.put_nowait((work, _refusal(req.body, f"bad request: {e}"), True))
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
            if work.abandoned:  # a backend that does not check `cancelled` must not keep
                raise _Abandoned  # the slot's only thread from the next connection's requests
            put((work, Chunk(task.job, task.cand, seq, text), False))
            seq += 1

        if work.cancelled.is_set():
            outcome = Outcome(task.job, task.cand, error="cancelled before it started")
        else:
            try:
                outcome = self.backend.generate(task, emit, work.cancelled)
            except _Abandoned:
                log.info("candidate stopped: its connection is over",
                         extra=self._kv(job=task.job, cand=task.cand))
                return
            except Exception as e:  # the model failed on this input: say so, keep serving
                log.warning("generation failed: %s", e, extra=self._kv(job=task.job,
                                                                        cand=task.cand))
                log.debug("generation failure in detail", exc_info=True, extra=self._kv(
                    job=task.job, cand=task.cand))
                outcome = Outcome(task.job, task.cand, error=f"generation failed: {e}")
        self._log_outcome(task, outcome)
        put((work, outcome, True))

    def _log_outcome(self, task: Task, outcome: Outcome) -> None:
        """One line a candidate served: how it ended, or why it could not be served."""
        if outcome.error is None:
            log.info("candidate done: %s tokens (%s)", outcome.usage.get("completion_tokens", "?"),
                     outcome.finish_reason, extra=self._kv(
                         job=task.job, cand=task.cand, took_s=outcome.timings.get("total_s")))
        elif outcome.error_kind == ERROR_REQUEST:  # a failed generation said so already
            log.info("candidate cannot be served: %s", outcome.error,
                     extra=self._kv(job=task.job, cand=task.cand))


async def _read_out(sock: zmq.asyncio.Socket, recv: asyncio.Future) -> asyncio.Future:
    """After a goodbye, read (and drop) what the broker still sends for a moment: a socket
    closed with unread data resets the connection, which can lose the goodbye. Returns the
    receive still pending, for the caller to cancel."""
    end = time.monotonic() + GOODBYE_LINGER_MS / 1000
    while (left := end - time.monotonic()) > 0:
        done, _ = await asyncio.wait({recv}, timeout=left)
        if not done or recv.exception() is not None:
            break
        recv = asyncio.ensure_future(sock.recv_multipart())
    return recv


def _send(sock: zmq.asyncio.Socket, frames: list[bytes]) -> bool:
    """Send now or not at all: False when the connection cannot take it (gone, or full)."""
    sent = sock.send_multipart(frames, zmq.NOBLOCK)  # a future that is already done
    try:
        sent.result()
    except zmq.Again:
        return False
    return True


def _refusal(body: tuple[bytes, ...], error: str) -> Outcome:
    """The error FINAL for a REQUEST we cannot read; its job and candidate are echoed back
    only where they can be ones."""
    try:
        m = unpack_body(body)
    except ProtocolError:
        m = {}
    job, cand = m.get("job"), m.get("cand")
    job = job if isinstance(job, str) and len(job) <= MAX_JOB_ID else ""
    ok = isinstance(cand, int) and not isinstance(cand, bool) and 0 <= cand <= MAX_CAND
    return Outcome(job, cand if ok else 0, error=error)
