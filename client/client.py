"""Client library: an MDP/0.2 client over DEALER, one request in flight per socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

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
LOST_GRACE_S = 1.0  # after a drop, how long replies already on their way may still come in
CANCEL_WAIT_S = 0.5  # on Ctrl-C, how long we wait for the broker to confirm swarm.cancel
CANCEL_LINGER_MS = 200
# a handshake that fails says why: CURVE refused our key, another mechanism, or a wrong key
_REFUSALS = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused this client's key (is it in the broker's "
                                     "allowed keys?)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "failed the handshake: it speaks another protocol or "
                                         "security mechanism (does one side run --secure, "
                                         "and the other not?)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed the secure handshake (is it the broker whose "
                                          "key is pinned?)",
}
_WATCHED = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@dataclass(slots=True)
class Link:
    """Where a request's one connection stands: pure logic fed with monitor events and `now`."""

    broker: str
    start: float
    connect_s: float  # give up reaching the broker after this
    reply_s: float    # give up on the FINAL after this, once connected
    connected: bool = False
    lost_at: float | None = None
    back: bool = False  # the handshake succeeded again after a drop
    refused: str | None = None  # why the broker's handshake failed, before any succeeded

    def on_event(self, event: int, now: float) -> None:
        if event in _REFUSALS and not self.connected:
            self.refused = _REFUSALS[event]
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.back = self.lost_at is not None
            self.connected = True
        elif event == zmq.EVENT_DISCONNECTED and self.connected and self.lost_at is None:
            self.lost_at = now
            log.info("lost the connection to the broker at %s", self.broker)

    def deadline(self) -> float:
        if self.refused is not None:
            return self.start  # it will not get better by waiting
        if self.back:
            return self.lost_at  # the new broker session does not know our request: give up now
        if self.lost_at is not None:
            return self.lost_at + LOST_GRACE_S
        return self.start + (self.reply_s if self.connected else self.connect_s)

    def failure(self) -> str:
        if self.refused is not None:
            return f"the broker at {self.broker} {self.refused}"
        if self.lost_at is not None:
            again = " (it came back, but without the request)" if self.back else ""
            return f"lost the broker at {self.broker} mid-request{again}"
        if not self.connected:
            return (f"the broker at {self.broker} could not be reached within {self.connect_s:g} s "
                    "(the connect timeout; is swarm-broker running there?)")
        return f"the broker at {self.broker} sent no final answer within {self.reply_s:g} s"


class SwarmClient:
    def __init__(self, broker: str = F.DEFAULT_BROKER_CONNECT,
                 ctx: zmq.asyncio.Context | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, curve: ClientKeys | None = None):
        self.broker = broker
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.connect_timeout_s = connect_timeout_s
        self.curve = curve  # --secure: CURVE to the pinned broker

    async def request(self, service: bytes, body: tuple[bytes, ...], timeout_s: float,
                      on_partial: Callable[[tuple[bytes, ...]], None] | None = None,
                      grace_s: float = 0.0) -> tuple[bytes, ...]:
        """Send one REQUEST and return the FINAL body; PARTIAL bodies go to on_partial.

        A broker we cannot reach fails the request after the connect timeout; one we reached
        gets timeout_s + grace_s for its FINAL (a job's FINAL comes at its deadline, by
        design); a broker lost mid-request fails it soon after. Cancelling the calling task
        (Ctrl-C) asks the broker to drop the request (swarm.cancel) before the socket closes.
        """
        link = Link(self.broker, time.monotonic(), min(self.connect_timeout_s, timeout_s),
                    timeout_s + grace_s)
        with self._dealer() as (sock, monitor):
            await sock.send_multipart(ClientRequest(service, body).to_frames())
            try:
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

    async def has_service(self, service: str, timeout_s: float = 5.0) -> bool:
        body = await self.request(F.MMI_SERVICE, (service.encode(),), timeout_s)
        return body[:1] == (b"200",)


async def _exchange(sock, monitor, service: bytes, link: Link,
                    on_partial: Callable[[tuple[bytes, ...]], None] | None) -> tuple[bytes, ...]:
    """Read replies and monitor events until the FINAL, or fail as the Link says."""
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
            raise RequestFailed(link.failure())


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
    if check and "error" in result:
        raise RequestFailed(result["error"])
    return result
