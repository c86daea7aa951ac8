"""Client library: an MDP/0.2 client over DEALER, one request in flight per socket."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import zmq
import zmq.asyncio

from common import frames as F
from common.bodies import GenerateRequest
from common.codec import pack, unpack_body
from common.errors import ProtocolError, RequestFailed
from common.messages import ClientReply, ClientRequest, decode_client, split_envelope

OnEvent = Callable[[dict[str, Any]], None]
REPLY_GRACE_S = 5.0  # how much past a job's deadline we wait for the broker's FINAL


class SwarmClient:
    def __init__(self, broker: str = F.DEFAULT_BROKER_CONNECT,
                 ctx: zmq.asyncio.Context | None = None):
        self.broker = broker
        self.ctx = ctx or zmq.asyncio.Context.instance()

    async def request(self, service: bytes, body: tuple[bytes, ...], timeout_s: float,
                      on_partial: Callable[[tuple[bytes, ...]], None] | None = None,
                      grace_s: float = 0.0) -> tuple[bytes, ...]:
        """Send one REQUEST and return the FINAL body; PARTIAL bodies go to on_partial.

        A broker we cannot reach fails the request after timeout_s; one we reached gets
        grace_s more for its FINAL (a job's FINAL comes at its deadline, by design).
        """
        with self._dealer() as (sock, monitor):
            poller = zmq.asyncio.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            start, connected = time.monotonic(), False
            await sock.send_multipart(ClientRequest(service, body).to_frames())
            while True:
                deadline = start + timeout_s + (grace_s if connected else 0.0)
                left_ms = int((deadline - time.monotonic()) * 1000)
                events = dict(await poller.poll(left_ms)) if left_ms > 0 else {}
                if not events:
                    raise RequestFailed(self._silence(connected, timeout_s))
                if monitor in events:
                    await monitor.recv_multipart()
                    connected = True
                reply = _reply(await sock.recv_multipart()) if sock in events else None
                if reply is None or reply.service != service:
                    continue
                if reply.final:
                    return reply.body
                if on_partial is not None:
                    on_partial(reply.body)

    @contextlib.contextmanager
    def _dealer(self) -> Iterator[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]:
        """A DEALER connected to the broker, with a monitor that reports the handshake."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            try:
                sock.connect(self.broker)
            except zmq.ZMQError as e:
                raise RequestFailed(f"cannot connect to the broker at '{self.broker}': {e}") from e
            yield sock, monitor
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)

    def _silence(self, connected: bool, timeout_s: float) -> str:
        if connected:
            return f"the broker at {self.broker} sent no final answer within {timeout_s:g} s"
        return (f"the broker at {self.broker} could not be reached within {timeout_s:g} s "
                "(is swarm-broker running there?)")

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
        return _map(final, check=True)

    async def status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        return await self.call(F.SERVICE_STATUS, {}, timeout_s)

    async def has_service(self, service: str, timeout_s: float = 5.0) -> bool:
        body = await self.request(F.MMI_SERVICE, (service.encode(),), timeout_s)
        return body[:1] == (b"200",)


def _reply(frames: list[bytes]) -> ClientReply | None:
    try:
        _, frames = split_envelope(frames)
        msg = decode_client(frames)
    except ProtocolError:
        return None
    return msg if isinstance(msg, ClientReply) else None


def _map(body: tuple[bytes, ...], check: bool = False) -> dict[str, Any]:
    try:
        result = unpack_body(body)
    except ProtocolError as e:
        raise RequestFailed(f"the broker sent an unreadable answer: {e}") from e
    if check and "error" in result:
        raise RequestFailed(result["error"])
    return result
