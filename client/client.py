"""Client library: an MDP/0.2 client over DEALER, one request in flight per socket.

A request whose broker was lost, or never answered, is sent again on a fresh socket a
bounded number of times (the lazy pirate of the zguide); an error the broker sent in a
FINAL is an answer, never retried. On a retry the request waits until the broker offers
its service again (MMI), since a restarted broker's workers come back on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from client.cells import text
from client.link import REFUSED_EVENTS, RETRIES, Link, Retries
from common import frames as F
from common.bodies import GenerateRequest
from common.codec import pack, unpack_body
from common.curve import ClientKeys
from common.errors import ProtocolError, RequestFailed
from common.messages import ClientReply, ClientRequest, decode_client, split_envelope

log = logging.getLogger(__name__)

OnEvent = Callable[[dict[str, Any]], None]
REPLY_GRACE_S = 5.0  # how much past a job's deadline we wait for the broker's FINAL
CONNECT_TIMEOUT_S = 5.0  # how long to try reaching the broker before giving up
CANCEL_WAIT_S = 0.5  # on Ctrl-C, how long we wait for the broker to confirm swarm.cancel
CANCEL_LINGER_MS = 200
REJOIN_POLL_S = 0.2  # on a retry, how often we ask whether the service is back (doubling)
REJOIN_POLL_MAX_S = 2.0
_OWN_SERVICES = (F.SERVICE_STATUS, F.SERVICE_CANCEL, F.SERVICE_HISTORY)  # the broker's own: always there
_WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | REFUSED_EVENTS


class SwarmClient:
    def __init__(self, broker: str = F.DEFAULT_BROKER_CONNECT,
                 ctx: zmq.asyncio.Context | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, *, retries: int = RETRIES,
                 on_retry: Callable[[str], None] | None = None, curve: ClientKeys | None = None):
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.broker = broker
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.connect_timeout_s = connect_timeout_s
        self.retries = retries
        self.on_retry = on_retry  # told each retry, in a sentence (swarm-ask: on stderr)
        self.curve = curve  # --secure: CURVE to the pinned broker

    async def request(self, service: bytes, body: tuple[bytes, ...], timeout_s: float,
                      on_partial: Callable[[tuple[bytes, ...]], None] | None = None,
                      grace_s: float = 0.0) -> tuple[bytes, ...]:
        """Send one REQUEST and return the FINAL body; PARTIAL bodies go to on_partial.

        A broker we cannot reach fails the request after the connect timeout; one we reached
        gets timeout_s + grace_s for its FINAL (a job's FINAL comes at its deadline, by
        design); a broker lost mid-request, or silent past that, gets the request again on a
        fresh socket, up to `retries` times (see Retries). Cancelling the calling task
        (Ctrl-C) asks the broker to drop the request (swarm.cancel) before the socket closes.
        """
        retries = Retries(self.retries)
        while True:
            link = Link(self.broker, time.monotonic(), min(self.connect_timeout_s, timeout_s),
                        timeout_s + grace_s)
            final = await self._attempt(service, body, link, on_partial, rejoin=retries.used > 0)
            if final is not None:
                return final
            pause = retries.pause_after(link)
            if pause is None:
                raise RequestFailed(retries.gave_up(link))
            note = retries.note(link)
            log.log(logging.INFO if self.on_retry else logging.WARNING, "%s", note)
            if self.on_retry is not None:
                self.on_retry(note)
            await asyncio.sleep(pause)

    async def _attempt(self, service: bytes, body: tuple[bytes, ...], link: Link,
                       on_partial: Callable[[tuple[bytes, ...]], None] | None,
                       rejoin: bool) -> tuple[bytes, ...] | None:
        """One try on a fresh socket: the FINAL body, or None when the link failed."""
        with self._dealer() as (sock, monitor):
            try:
                if rejoin and not await _rejoin(sock, monitor, service, link):
                    return None
                await sock.send_multipart(ClientRequest(service, body).to_frames())
                return await _exchange(sock, monitor, service, link, on_partial)
            except asyncio.CancelledError:
                if link.lost_at is None:  # connected, or about to be: the request may be queued
                    await _cancel(sock)
                raise

    @contextlib.contextmanager
    def _dealer(self) -> Iterator[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]:
        """A DEALER connected to the broker, with a monitor for handshakes and drops."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, F.MAX_MESSAGE_BYTES)  # a bigger reply drops the link
        if self.curve is not None:
            self.curve.apply(sock)
        monitor = sock.get_monitor_socket(_WATCHED)
        try:
            try:
                sock.connect(self.broker)
            except zmq.ZMQError as e:
                raise RequestFailed(f"cannot connect to the broker at '{self.broker}': {e}") from e
            yield sock, monitor
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close()  # LINGER is 0, or CANCEL_LINGER_MS once a cancel is on its way

    async def call(self, service: bytes, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """A request whose FINAL is one msgpack map; an `error` key raises RequestFailed."""
        return _map(await self.request(service, (pack(body),), timeout_s), check=True)

    async def generate(self, request: GenerateRequest, timeout_s: float,
                       on_event: OnEvent | None = None) -> dict[str, Any]:
        """Ask the swarm; progress events go to on_event; returns the FINAL map."""
        def partial(body: tuple[bytes, ...]) -> None:
            if on_event is not None:
                try:
                    on_event(unpack_body(body))
                except ProtocolError:
                    pass  # a malformed progress event is not worth failing the answer for

        wait_s = request.timeout_s or timeout_s
        body = (pack(request.to_map()),)
        final = await self.request(F.SERVICE_GENERATE, body, wait_s, partial, REPLY_GRACE_S)
        return _checked_result(_map(final, check=True))

    async def status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        status = await self.call(F.SERVICE_STATUS, {}, timeout_s)
        peers = status.get("peers")
        if not isinstance(peers, list) or not all(isinstance(p, dict) for p in peers):
            raise RequestFailed("the broker's status has no list of peers")
        return status

    async def history(self, limit: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """The broker's most recent jobs, newest first (broker/history.py: one map each)."""
        jobs = (await self.call(F.SERVICE_HISTORY, {"limit": limit}, timeout_s)).get("jobs")
        if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
            raise RequestFailed("the broker's history has no list of jobs")
        return jobs

    async def has_service(self, service: str, timeout_s: float = 5.0) -> bool:
        body = await self.request(F.MMI_SERVICE, (service.encode(),), timeout_s)
        return body[:1] == (b"200",)


async def _rejoin(sock, monitor, service: bytes, link: Link) -> bool:
    """Before a retry's request: wait until the broker offers `service` (its workers come
    back within their liveness and back-off after a broker restart), asking MMI with a
    doubling pause, for at most the request's own time; then the request goes anyway, and
    a broker still without the service answers it itself. False if the link failed. The
    request's time starts over once it is sent."""
    if service in _OWN_SERVICES or service.startswith(F.MMI_PREFIX):
        return True
    pause, until = REJOIN_POLL_S, link.start + link.reply_s
    while True:
        await sock.send_multipart(ClientRequest(F.MMI_SERVICE, (service,)).to_frames())
        found = await _exchange(sock, monitor, F.MMI_SERVICE, link, None)
        if found is None:
            return False
        if found[:1] == (b"200",) or time.monotonic() + pause >= until:
            link.start = time.monotonic()
            return True
        await asyncio.sleep(pause)
        pause = min(pause * 2, REJOIN_POLL_MAX_S)


async def _exchange(sock, monitor, service: bytes, link: Link,
                    on_partial: Callable[[tuple[bytes, ...]], None] | None
                    ) -> tuple[bytes, ...] | None:
    """Read replies and monitor events until the FINAL; None when the Link gives up."""
    poller = zmq.asyncio.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    while True:
        left_ms = max(0, int((link.deadline() - time.monotonic()) * 1000))
        events = dict(await poller.poll(left_ms))
        if monitor in events:
            link.on_event(parse_monitor_message(await monitor.recv_multipart())["event"],
                          time.monotonic())
        if sock in events:
            reply = _reply(await sock.recv_multipart())
            if reply is not None and reply.service == service:
                if reply.final:
                    return reply.body
                if on_partial is not None:
                    on_partial(reply.body)
        elif time.monotonic() >= link.deadline():
            return None


async def _cancel(sock: zmq.asyncio.Socket) -> None:
    """Ask the broker to drop this socket's jobs, and give it a moment to say it did."""
    sock.setsockopt(zmq.LINGER, CANCEL_LINGER_MS)
    try:
        await sock.send_multipart(ClientRequest(F.SERVICE_CANCEL, (pack({}),)).to_frames(),
                                  flags=zmq.NOBLOCK)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while (left_ms := int((deadline - time.monotonic()) * 1000)) > 0:
            if not await sock.poll(left_ms, zmq.POLLIN):
                break
            reply = _reply(await sock.recv_multipart())
            if reply is not None and reply.final and reply.service == F.SERVICE_CANCEL:
                log.info("the broker cancelled the request")
                break
    except (zmq.ZMQError, asyncio.CancelledError):
        log.debug("could not send swarm.cancel", exc_info=True)


def _reply(frames: list[bytes]) -> ClientReply | None:
    try:
        _, frames = split_envelope(frames)
        msg = decode_client(frames)
    except ProtocolError:
        return None
    return msg if isinstance(msg, ClientReply) else None


def _checked_result(result: dict[str, Any]) -> dict[str, Any]:
    """A generate FINAL must name its winner: {winner: {cand, peer, text}, ...}."""
    winner = result.get("winner")
    if not (isinstance(winner, dict) and isinstance(winner.get("text"), str)
            and isinstance(winner.get("cand"), int) and not isinstance(winner.get("cand"), bool)):
        raise RequestFailed("the broker's answer names no winner with a text")
    return result


def _map(body: tuple[bytes, ...], check: bool = False) -> dict[str, Any]:
    try:
        result = unpack_body(body)
    except ProtocolError as e:
        raise RequestFailed(f"the broker sent an unreadable answer: {e}") from e
    if check and "error" in result:  # shown on a terminal: one clean line, whatever came
        raise RequestFailed(text(result["error"]) or "the broker sent an error without a text")
    return result
