"""The broker's socket loop: one ROUTER for clients and workers, MDP/0.2 on the wire.

The poll timeout is the housekeeping tick: every pass purges silent workers, sends due
heartbeats (to busy workers too) and checks job timeouts. Anything malformed is counted,
logged and dropped; no message, and no step of housekeeping, can raise out of the loop.
Sends never block: the ROUTER is ROUTER_MANDATORY and `Delivery` keeps what a slow peer
cannot take yet, so a FINAL is not dropped and a vanished client is noticed; a peer that
lets more pile up than `Delivery` allows is cut off and treated as gone. The loop owns its
collaborators: the worker side in `broker.workers`, the broker's own services in
`broker.services`, READY, the watchdog and the graceful stop in `broker.lifecycle`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable

import zmq
import zmq.asyncio

from broker.delivery import Delivery, Sent
from broker.adaptive import Learning
from broker.generate import GenerateService
from broker.history import History
from broker.keeper import Keeper
from broker.lifecycle import GOODBYE_S, LAST_FLUSH_S, SHUTDOWN_GRACE_S, Lifecycle, last_flush
from broker.local_clients import LocalClients, Sink
from broker.policy import Limits, TimeoutPolicy
from broker.metrics import MetricsBook
from broker.outbox import Outbox
from broker import peers
from broker.peers import Weights
from broker.registry import Registry
from broker.routing import Router
from broker.services import OwnServices, rejections
from broker.settings import BrokerConfig
from broker.store import Store
from broker.verdicts import BAD_REQUEST
from broker.watch import Watch
from broker.workers import Workers
from broker.zap import secure
from common import __version__
from common import frames as F
from common import logs
from common.bodies import GenerateRequest
from common.codec import unpack_body
from common.errors import BodyError, ProtocolError
from common.mdns import WorkerAdvert
from common.messages import ClientReply, ClientRequest, Heartbeat, decode
from common.rejections import Rejections
from common.sdnotify import Notifier

log = logging.getLogger(__name__)

MAX_BATCH = 1000   # messages handled per pass before housekeeping gets a turn
TICK_MAX_S = 0.25  # the longest the loop sleeps
BUSY_TICK_S = 0.001  # while a vote is counted elsewhere (a backlog says when it is due)
__all__ = ["Broker", "BrokerConfig", "GOODBYE_S", "LAST_FLUSH_S", "SHUTDOWN_GRACE_S"]


class Broker:
    def __init__(self, config: BrokerConfig, ctx: zmq.asyncio.Context | None = None,
                 notifier: Notifier | None = None):
        self.config = config
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.registry = Registry(config.heartbeat_s, config.liveness)
        self.metrics = MetricsBook()
        self.history = History(config.history_size)
        self.keeper = Keeper(Store(config.state_file, config.history_size), self.metrics,
                             self.history, lambda: self.registry.anonymous())
        self.keeper.load()
        self.local = LocalClients()  # in-process clients: the HTTP API
        self.outbox = Outbox(self.local)
        self.delivery = Delivery(self._send_now)
        self.voter = ThreadPoolExecutor(1, thread_name_prefix="vote")
        self.watch = Watch()  # what the live web page sees (broker/web.py)
        self.timeouts = TimeoutPolicy(config.timeout_s, config.first_token_timeout_s,
                                      {**peers.timeouts(config.peers), **config.peer_timeouts},
                                      Learning(config.timeout_floor_s, config.timeout_cap_s))
        self.generate = GenerateService(self.registry, self.metrics, self.outbox, self.timeouts,
                                        self.voter, Limits(config.max_jobs, config.max_candidates),
                                        config.cancel_grace_s, self.keeper.job_ended,
                                        Weights.of(config.peers), self.watch)
        self.router = Router(self.registry, self.outbox, config.timeout_s)
        self.stats = {"errors": 0, "messages": 0}
        self.rejected = Rejections()  # every message refused, by reason (swarm.status)
        self.started_at = time.monotonic()
        self.endpoint: str | None = None
        self.socket: zmq.asyncio.Socket | None = None
        self._sync: zmq.Socket | None = None
        self._zap = None  # the ZAP authenticator, under --secure
        self.advertised: Callable[[], dict[str, WorkerAdvert]] = dict  # node id -> mDNS advert
        self.lifecycle = Lifecycle(notifier or Notifier(), self.generate, config.shutdown_grace_s)
        self.services = OwnServices(self.registry, self.metrics, self.history, self.generate,
                                    self.timeouts, self.outbox, self.rejected, self._broker_info,
                                    lambda: self.advertised(),
                                    frozenset(n for n, p in config.peers.items() if p.disabled))
        self.workers = Workers(self.registry, self.metrics, self.outbox, self.generate,
                               self.router, self.rejected, config.peers)

    def bind(self) -> str:
        """Bind the ROUTER; returns the endpoint actually bound (port resolved)."""
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, F.MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if self.config.curve is not None:  # the ZAP handler answers before anyone can connect
            self._zap = secure(sock, self.ctx, self.config.curve, self.stats)
        sock.bind(self.config.bind)
        self.socket = sock
        self._sync = zmq.Socket.shadow(sock.underlying)  # sends that raise at once, never await
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("broker listening on %s", self.endpoint)
        return self.endpoint

    async def run(self) -> None:
        if self.socket is None:
            self.bind()
        linger_ms = 0
        try:
            while True:
                if await self.socket.poll(int(self._tick_s() * 1000), zmq.POLLIN):
                    await self._drain()
                now = time.monotonic()
                self.housekeeping(now)
                self._flush(now)
                if self._stopped(now):
                    await last_flush(self.socket, self.delivery, self._flush, MAX_BATCH)
                    linger_ms = int(LAST_FLUSH_S * 1000)  # what is queued still goes out
                    return
        finally:
            self._guarded("saving the broker's state", self.keeper.close)
            self.voter.shutdown(wait=False, cancel_futures=True)
            self.socket.close(linger=linger_ms)
            if self._zap is not None:
                self._zap.stop()

    # -- a graceful stop -------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop gracefully (a signal handler calls this): new jobs are refused, running ones
        have the configured grace to finish; then `run` fails the rest, says goodbye and returns."""
        self.lifecycle.shutdown()

    def advertised_now(self) -> None:
        """The mDNS advert is registered (or failed to be): READY may go out."""
        self.lifecycle.advertised_now()

    def _stopped(self, now: float) -> bool:
        """Whether a graceful stop is complete: every job ended (those the grace did not
        see through with a FINAL that says so) and every worker told DISCONNECT."""
        if not self.lifecycle.over(now):
            return False
        for slot in self.registry.all():
            self._guarded("a goodbye", self.workers.disconnect, slot,
                          "the broker is shutting down", now)
        self._flush(now)
        return True

    def _tick_s(self) -> float:
        if self.generate.busy:
            return BUSY_TICK_S
        tick = min(TICK_MAX_S, self.config.heartbeat_s, self.registry.shortest_interval_s())
        wait = self.delivery.wait_s(time.monotonic())  # a backed-up peer's next try
        return tick if wait is None else min(tick, wait)

    async def _drain(self) -> None:
        recv = self._sync.recv_multipart  # a plain read: no future per message
        for _ in range(MAX_BATCH):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(frames, time.monotonic())

    # -- sending -----------------------------------------------------------------------
    def _send_now(self, frames: list[bytes]) -> Sent:
        try:
            self._sync.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return Sent.FULL
        except zmq.ZMQError as e:  # EHOSTUNREACH: that peer has gone
            if e.errno != zmq.EHOSTUNREACH:
                log.warning("send failed: %s", e, extra=logs.kv(identity=frames[0].hex()))
            return Sent.GONE
        return Sent.OK

    def _flush(self, now: float) -> None:
        gone = self.delivery.retry(now)
        for _ in range(4):  # a gone client's jobs end, which queues a few more messages
            gone += [i for env in self.outbox.drain() if (i := self.delivery.push(env))]
            for identity in dict.fromkeys(gone):
                self._peer_gone(identity, now)
            gone = []
            if not self.outbox:
                return

    def _peer_gone(self, identity: bytes, now: float) -> None:
        """A send found this peer gone. A worker's loss shows through liveness; a client's
        jobs stop here, so nobody generates answers that no one will read."""
        if identity in self.registry:
            return
        self._guarded("a gone client", self.generate.cancel_client, identity, now,
                      reason="the client went away")
        self.router.client_gone(identity)

    # -- in-process clients (the HTTP API) -------------------------------------------------
    def submit_local(self, sink: Sink, request: GenerateRequest) -> bytes:
        """Submit a job for an in-process client: its replies go to `sink`, as bodies.
        Returns the client's identity, for `close_local`."""
        identity = self.local.open(sink)
        now = time.monotonic()
        self.generate.submit(identity, False, request, now)
        self._flush(now)
        return identity

    def close_local(self, identity: bytes, reason: str = "the HTTP client went away") -> None:
        """The local client is done; a job it still has is cancelled (its FINAL is dropped)."""
        now = time.monotonic()
        self.local.close(identity)
        self._guarded("a gone local client", self.generate.cancel_client, identity, now,
                      reason=reason)
        self._flush(now)

    # -- one message -------------------------------------------------------------------
    def handle(self, frames: list[bytes], now: float) -> None:
        self.stats["messages"] += 1
        if len(frames) < 2:
            self.rejected.add("malformed")
            return
        identity = frames[0]
        try:
            delimited, message = decode(frames[1:])
            if isinstance(message, ClientRequest):
                self._on_client(identity, delimited, message, now)
            elif isinstance(message, ClientReply):
                raise ProtocolError("clients may only send REQUEST")
            else:
                self.workers.on_message(identity, delimited, message, now)
        except ProtocolError as e:
            slot = self.registry.get(identity)
            if self.rejected.add("malformed"):  # the 1st, 2nd, 4th, ...: a flood logs little
                log.warning("dropped a malformed message: %s (%d so far)", e,
                            self.rejected["malformed"], extra=logs.kv(
                                identity=identity.hex(), peer=slot.peer if slot else None))
            if slot is not None:  # a confused worker: make it start over (RFC 18)
                self._guarded("a confused worker", self.workers.disconnect, slot,
                              f"sent a malformed message ({e})", now)
        except Exception:  # a daemon never dies of a bad message
            self.stats["errors"] += 1
            log.exception("error handling a message", extra=logs.kv(identity=identity.hex()))

    def _on_client(self, client: bytes, delimited: bool, req: ClientRequest, now: float) -> None:
        if req.service == F.SERVICE_GENERATE:
            try:
                request = GenerateRequest.from_map(unpack_body(req.body))
            except BodyError as e:
                self.rejected.add("bad_request")
                self.outbox.error(client, delimited, req.service, f"{BAD_REQUEST}: {e}")
                return
            self.generate.submit(client, delimited, request, now)
        elif self.services.serves(req.service):
            self.services.handle(client, delimited, req, now)
        else:
            self.router.submit(client, delimited, req.service, req.body, now)

    # -- housekeeping --------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        """Each step guarded on its own: one failing step never starves the others."""
        self._guarded("purging silent workers", self.workers.purge, now)
        for slot in self.registry.beats_due(now):
            self.outbox.send(slot.identity, slot.delimited, Heartbeat(), droppable=True)
        self._guarded("job timeouts", self.workers.generate_tick, now)
        self._guarded("routing timeouts", self.workers.route_tick, now)
        self._guarded("keeping state", self.keeper.tick, now)
        self.lifecycle.notify(now, self.endpoint)

    def _guarded(self, what: str, step, *args, **kwargs) -> None:
        try:
            step(*args, **kwargs)
        except Exception:
            self.stats["errors"] += 1
            log.exception("error in %s", what)

    def _broker_info(self, now: float) -> dict:
        return {"version": __version__, "endpoint": self.endpoint, "swarm": self.config.swarm,
                "uptime_s": round(now - self.started_at, 3),
                "stopping": self.lifecycle.stopping,  # draining: new jobs are refused
                "jobs_active": len(self.generate.jobs), **self.stats,
                "malformed": self.rejected["malformed"], "state": self.keeper.info(),
                **self.generate.stats, **self.delivery.stats, "rejected": self.rejections()}

    def rejections(self) -> dict[str, int]:
        """Every refusal by reason: at the door (here, and keys the ZAP door refused) and
        by the services and delivery."""
        return rejections(self.rejected, self.stats, self.generate.stats, self.router.stats,
                          self.delivery.stats)
