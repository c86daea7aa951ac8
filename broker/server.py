"""The broker's socket loop: one ROUTER for clients and workers, MDP/0.2 on the wire.

The poll timeout is the housekeeping tick: every pass purges silent workers, sends due
heartbeats (to busy workers too) and checks job timeouts. Anything malformed is counted,
logged and dropped; no message can raise out of the loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from broker.generate import GenerateService, TimeoutPolicy
from broker.metrics import MetricsBook
from broker.outbox import Outbox
from broker.registry import Registry, Slot
from broker.routing import Router
from broker.status import status_map
from common import __version__
from common import frames as F
from common.bodies import GenerateRequest
from common.codec import unpack_body
from common.errors import BodyError, ProtocolError
from common.messages import (ClientReply, ClientRequest, Disconnect, Heartbeat, Ready,
                             WorkerReply, decode)
from common.profile import WorkerProfile

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # messages handled per pass before housekeeping gets a turn


@dataclass(slots=True)
class BrokerConfig:
    bind: str = F.DEFAULT_BROKER_BIND
    heartbeat_s: float = F.DEFAULT_HEARTBEAT_S
    liveness: int = F.DEFAULT_LIVENESS
    timeout_s: float = F.DEFAULT_TIMEOUT_S
    first_token_timeout_s: float | None = None
    peer_timeouts: dict[str, float] = field(default_factory=dict)


class Broker:
    def __init__(self, config: BrokerConfig, ctx: zmq.asyncio.Context | None = None):
        self.config = config
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.registry = Registry(config.heartbeat_s, config.liveness)
        self.metrics = MetricsBook()
        self.outbox = Outbox()
        timeouts = TimeoutPolicy(config.timeout_s, config.first_token_timeout_s,
                                 dict(config.peer_timeouts))
        self.generate = GenerateService(self.registry, self.metrics, self.outbox, timeouts)
        self.router = Router(self.registry, self.outbox, config.timeout_s)
        self.stats = {"malformed": 0, "errors": 0, "messages": 0}
        self.started_at = time.monotonic()
        self.endpoint: str | None = None
        self.socket: zmq.asyncio.Socket | None = None
        self._next_heartbeat = 0.0

    def bind(self) -> str:
        """Bind the ROUTER; returns the endpoint actually bound (port resolved)."""
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, F.MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.bind(self.config.bind)
        self.socket = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("broker listening on %s", self.endpoint)
        return self.endpoint

    async def run(self) -> None:
        if self.socket is None:
            self.bind()
        tick_s = min(self.config.heartbeat_s, 0.25)
        try:
            while True:
                if await self.socket.poll(int(tick_s * 1000), zmq.POLLIN):
                    await self._drain()
                self.housekeeping(time.monotonic())
                await self._flush()
        finally:
            self.socket.close(linger=0)

    async def _drain(self) -> None:
        for _ in range(MAX_BATCH):
            try:
                frames = await self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(frames, time.monotonic())

    async def _flush(self) -> None:
        for frames in self.outbox.drain():
            try:
                await self.socket.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError as e:  # a peer's queue is full or gone: its loss, not ours
                log.debug("send to %s failed: %s", frames[0].hex(), e)

    # -- one message -------------------------------------------------------------------
    def handle(self, frames: list[bytes], now: float) -> None:
        self.stats["messages"] += 1
        if len(frames) < 2:
            self.stats["malformed"] += 1
            return
        identity = frames[0]
        try:
            delimited, message = decode(frames[1:])
            if isinstance(message, ClientRequest):
                self._on_client(identity, delimited, message, now)
            elif isinstance(message, ClientReply):
                raise ProtocolError("clients may only send REQUEST")
            else:
                self._on_worker(identity, delimited, message, now)
        except ProtocolError as e:
            self.stats["malformed"] += 1
            log.warning("dropped malformed message from %s: %s", identity.hex(), e)
        except Exception:  # a daemon never dies of a bad message
            self.stats["errors"] += 1
            log.exception("error handling a message from %s", identity.hex())

    def _on_client(self, client: bytes, delimited: bool, req: ClientRequest, now: float) -> None:
        if req.service == F.SERVICE_GENERATE:
            try:
                request = GenerateRequest.from_map(unpack_body(req.body))
            except BodyError as e:
                self.outbox.error(client, delimited, req.service, f"bad request: {e}")
                return
            self.generate.submit(client, delimited, request, now)
        elif req.service == F.SERVICE_STATUS:
            body = status_map(self.registry, self.metrics, self._broker_info(now))
            self.outbox.reply(client, delimited, req.service, body, final=True)
        elif req.service == F.MMI_SERVICE:
            self._mmi(client, delimited, req)
        elif req.service.startswith(F.MMI_PREFIX):
            self._plain(client, delimited, req.service, b"501")
        else:
            self.router.submit(client, delimited, req.service, req.body, now)

    def _mmi(self, client: bytes, delimited: bool, req: ClientRequest) -> None:
        wanted = req.body[0] if req.body else b""
        known = wanted in (F.SERVICE_STATUS, F.MMI_SERVICE) or bool(self.registry.serving(wanted))
        self._plain(client, delimited, req.service, b"200" if known else b"404")

    def _plain(self, client: bytes, delimited: bool, service: bytes, body: bytes) -> None:
        self.outbox.send(client, delimited, ClientReply(service, (body,), final=True))

    def _on_worker(self, identity: bytes, delimited: bool, msg, now: float) -> None:
        slot = self.registry.get(identity)
        if isinstance(msg, Ready):
            self._on_ready(identity, delimited, msg, slot, now)
        elif isinstance(msg, Disconnect):
            if slot is not None:
                self._lose(slot, "disconnected", now)
        elif slot is None:
            # a worker we do not know (we restarted, or it was purged): make it start over
            self.outbox.send(identity, delimited, Disconnect())
        elif isinstance(msg, Heartbeat):
            self.registry.touch(identity, now)
        elif isinstance(msg, WorkerReply) and not slot.idle:
            self.registry.touch(identity, now)
            service = self.generate if slot.service == F.SERVICE_GENERATE else self.router
            service.on_reply(slot, msg, now)
        else:  # valid but unexpected (REQUEST, CANCEL, a reply while idle): RFC 18 says DISCONNECT
            name = type(msg).__name__
            log.warning("worker %s sent an unexpected %s; disconnecting it", slot.peer, name)
            self._disconnect(slot, f"sent an unexpected {name}", now)

    def _on_ready(self, identity: bytes, delimited: bool, msg: Ready, slot: Slot | None,
                  now: float) -> None:
        if slot is not None or msg.service.startswith(F.MMI_PREFIX) or \
                msg.service == F.SERVICE_STATUS:
            if slot is not None:
                self._disconnect(slot, "sent READY twice", now)
            else:
                self.outbox.send(identity, delimited, Disconnect())
            return
        try:
            profile = WorkerProfile.from_frame(msg.profile, identity.hex()[:12])
        except BodyError as e:
            self.outbox.send(identity, delimited, Disconnect())
            raise ProtocolError(f"bad READY profile: {e}") from e
        self.registry.add(identity, msg.service, profile, delimited, now)
        self.metrics.peer(profile.name)  # known from now on, also once it is gone
        log.info("worker %s slot %d ready for '%s' (%s, %s)", profile.name, profile.slot,
                 msg.service.decode(), profile.backend, profile.model)
        self._dispatch(now)

    def _disconnect(self, slot: Slot, reason: str, now: float) -> None:
        self.outbox.send(slot.identity, slot.delimited, Disconnect())
        self._lose(slot, reason, now)

    def _lose(self, slot: Slot, reason: str, now: float) -> None:
        self.registry.remove(slot.identity)
        log.info("worker %s slot %d gone: %s", slot.peer, slot.profile.slot, reason)
        service = self.generate if slot.service == F.SERVICE_GENERATE else self.router
        service.on_slot_lost(slot, reason, now)

    def _dispatch(self, now: float) -> None:
        self.generate.dispatch(now)
        self.router.dispatch(now)

    # -- housekeeping --------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        for slot in self.registry.purge(now):
            self._lose(slot, f"went silent for {self.registry.expiry_s:g} s", now)
        if now >= self._next_heartbeat:
            for slot in self.registry.all():
                self.outbox.send(slot.identity, slot.delimited, Heartbeat())
            self._next_heartbeat = now + self.config.heartbeat_s
        self.generate.tick(now)
        self.router.tick(now)

    def _broker_info(self, now: float) -> dict:
        return {"version": __version__, "endpoint": self.endpoint,
                "uptime_s": round(now - self.started_at, 3),
                "jobs_active": len(self.generate.jobs), **self.stats}

