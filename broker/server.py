"""The broker's socket loop: one ROUTER for clients and workers, MDP/0.2 on the wire.

The poll timeout is the housekeeping tick: every pass purges silent workers, sends due
heartbeats (to busy workers too) and checks job timeouts. Anything malformed is counted,
logged and dropped; no message, and no step of housekeeping, can raise out of the loop.
Sends never block: the ROUTER is ROUTER_MANDATORY and `Delivery` keeps what a slow peer
cannot take yet, so a FINAL is not dropped and a vanished client is noticed; a peer that
lets more pile up than `Delivery` allows is cut off and treated as gone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import zmq
import zmq.asyncio

from broker.delivery import Delivery, Sent
from broker.adaptive import DEFAULT_CAP_S, DEFAULT_FLOOR_S, Learning
from broker.generate import GenerateService
from broker.history import DEFAULT_HISTORY_SIZE, History, limit_of
from broker.keeper import Keeper
from broker.local_clients import LocalClients, Sink
from broker.policy import CANCEL_GRACE_S, MAX_JOB_CANDIDATES, MAX_JOBS, Limits, TimeoutPolicy
from broker.metrics import MetricsBook
from broker.outbox import Outbox
from broker import peers
from broker.peers import PeerSettings, Weights
from broker.registry import Registry, Slot
from broker.routing import Router
from broker.status import status_map
from broker.store import Store
from broker.verdicts import BAD_REQUEST
from broker.zap import ServerKeys, secure
from common import __version__
from common import frames as F
from common import logs
from common.bodies import GenerateRequest
from common.codec import field as body_field, unpack_body
from common.errors import BodyError, ProtocolError
from common.mdns import DEFAULT_SWARM, WorkerAdvert
from common.messages import (ClientReply, ClientRequest, Disconnect, Heartbeat, Ready,
                             WorkerReply, decode)
from common.profile import WorkerProfile
from common.rejections import Rejections
from common.sdnotify import Notifier

log = logging.getLogger(__name__)

MAX_BATCH = 1000   # messages handled per pass before housekeeping gets a turn
TICK_MAX_S = 0.25  # the longest the loop sleeps
BUSY_TICK_S = 0.005  # while a vote is counted elsewhere (a backlog says when it is due)
SHUTDOWN_GRACE_S = 30.0  # how long running jobs may take to finish once a stop is asked for
LAST_FLUSH_S = 1.0       # how long a stopping broker tries to deliver what is backed up
GOODBYE_S = 0.3          # and at least how long it reads (and drops) what workers still send


@dataclass(slots=True)
class BrokerConfig:
    bind: str = F.DEFAULT_BROKER_BIND
    heartbeat_s: float = F.DEFAULT_HEARTBEAT_S
    liveness: int = F.DEFAULT_LIVENESS
    timeout_s: float = F.DEFAULT_TIMEOUT_S
    first_token_timeout_s: float | None = None
    peer_timeouts: dict[str, float] = field(default_factory=dict)  # --peer-timeout: beats peers'
    max_jobs: int = MAX_JOBS
    max_candidates: int = MAX_JOB_CANDIDATES
    swarm: str = DEFAULT_SWARM
    timeout_floor_s: float = DEFAULT_FLOOR_S  # what a learned per-peer timeout stays within
    timeout_cap_s: float = DEFAULT_CAP_S
    curve: ServerKeys | None = None  # --secure: CURVE with allowed keys
    cancel_grace_s: float = CANCEL_GRACE_S
    state_file: Path | None = None  # peer metrics and job history kept here (None: in memory)
    history_size: int = DEFAULT_HISTORY_SIZE
    peers: dict[str, PeerSettings] = field(default_factory=dict)  # [peers] of the config file
    shutdown_grace_s: float = SHUTDOWN_GRACE_S


class Broker:
    def __init__(self, config: BrokerConfig, ctx: zmq.asyncio.Context | None = None,
                 notifier: Notifier | None = None):
        self.config = config
        self.notifier = notifier or Notifier()  # systemd's: READY, STOPPING, the watchdog
        self.stop_at: float | None = None  # a graceful stop was asked for: the grace ends then
        self.mdns_settled = True  # the CLI clears it until its mDNS advert is registered
        self.ready_sent = False
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
        self.timeouts = TimeoutPolicy(config.timeout_s, config.first_token_timeout_s,
                                      {**peers.timeouts(config.peers), **config.peer_timeouts},
                                      Learning(config.timeout_floor_s, config.timeout_cap_s))
        self.generate = GenerateService(self.registry, self.metrics, self.outbox, self.timeouts,
                                        self.voter, Limits(config.max_jobs, config.max_candidates),
                                        config.cancel_grace_s, self.keeper.job_ended,
                                        Weights.of(config.peers))
        self.router = Router(self.registry, self.outbox, config.timeout_s)
        self.stats = {"errors": 0, "messages": 0}
        self.rejected = Rejections()  # every message refused, by reason (swarm.status)
        self.started_at = time.monotonic()
        self.endpoint: str | None = None
        self.socket: zmq.asyncio.Socket | None = None
        self._sync: zmq.Socket | None = None
        self._zap = None  # the ZAP authenticator, under --secure
        self.advertised: Callable[[], dict[str, WorkerAdvert]] = dict  # node id -> mDNS advert

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
                    await self._last_flush()
                    linger_ms = int(LAST_FLUSH_S * 1000)  # what is queued still goes out
                    return
        finally:
            self._guarded("saving the broker's state", self.keeper.close)
            self.voter.shutdown(wait=False, cancel_futures=True)
            self.socket.close(linger=linger_ms)
            if self._zap is not None:
                self._zap.stop()

    # -- a graceful stop -------------------------------------------------------------------
    def shutdown(self, grace_s: float | None = None) -> None:
        """Stop gracefully (a signal handler calls this): new jobs are refused, running ones
        have `grace_s` to finish; then `run` fails the rest, says goodbye and returns."""
        if self.stop_at is not None:
            return
        grace_s = self.config.shutdown_grace_s if grace_s is None else grace_s
        self.stop_at = time.monotonic() + grace_s
        self.generate.drain()
        running = len(self.generate.jobs)
        log.info("shutting down: %d job(s) running get %g s to finish", running, grace_s)
        self.notifier.stopping(f"draining {running} job(s) within {grace_s:g} s")

    def advertised_now(self) -> None:
        """The mDNS advert is registered (or failed to be): READY may go out."""
        self.mdns_settled = True

    def _stopped(self, now: float) -> bool:
        """Whether a graceful stop is complete: every job ended (those the grace did not
        see through with a FINAL that says so) and every worker told DISCONNECT."""
        if self.stop_at is None or (now < self.stop_at and not self.generate.drained):
            return False
        failed = self.generate.fail_all(
            now, f"it did not finish within the {self.config.shutdown_grace_s:g} s grace")
        if failed:
            log.warning("shutting down: %d job(s) did not finish in time; failed them", failed)
        for slot in self.registry.all():
            self._guarded("a goodbye", self._disconnect, slot, "the broker is shutting down", now)
        self._flush(now)
        return True

    async def _last_flush(self) -> None:
        """Deliver what backed-up peers can still take, for a moment at most, reading (and
        dropping) what workers still send meanwhile: a socket closed with unread data resets
        the connection, and a reset can lose the DISCONNECT just sent before it."""
        start = time.monotonic()
        while (now := time.monotonic()) < start + LAST_FLUSH_S and \
                (self.delivery.pending or now < start + GOODBYE_S):
            if await self.socket.poll(10, zmq.POLLIN):
                with contextlib.suppress(zmq.Again):
                    for _ in range(MAX_BATCH):
                        await self.socket.recv_multipart(zmq.NOBLOCK)
            self._flush(time.monotonic())

    def _tick_s(self) -> float:
        if self.generate.busy:
            return BUSY_TICK_S
        tick = min(TICK_MAX_S, self.config.heartbeat_s, self.registry.shortest_interval_s())
        wait = self.delivery.wait_s(time.monotonic())  # a backed-up peer's next try
        return tick if wait is None else min(tick, wait)

    async def _drain(self) -> None:
        for _ in range(MAX_BATCH):
            try:
                frames = await self.socket.recv_multipart(zmq.NOBLOCK)
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
                self._on_worker(identity, delimited, message, now)
        except ProtocolError as e:
            slot = self.registry.get(identity)
            if self.rejected.add("malformed"):  # the 1st, 2nd, 4th, ...: a flood logs little
                log.warning("dropped a malformed message: %s (%d so far)", e,
                            self.rejected["malformed"], extra=logs.kv(
                                identity=identity.hex(), peer=slot.peer if slot else None))
            if slot is not None:  # a confused worker: make it start over (RFC 18)
                self._guarded("a confused worker", self._disconnect, slot,
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
        elif req.service == F.SERVICE_CANCEL:
            self._cancel(client, delimited, req, now)
        elif req.service == F.SERVICE_HISTORY:
            self._history(client, delimited, req)
        elif req.service == F.SERVICE_STATUS:
            body = status_map(self.registry, self.metrics, self._broker_info(now),
                              self.advertised(), now, self.timeouts)
            self.outbox.reply(client, delimited, req.service, body, final=True)
        elif req.service == F.MMI_SERVICE:
            self._mmi(client, delimited, req)
        elif req.service.startswith(F.MMI_PREFIX):
            self._plain(client, delimited, req.service, b"501")
        else:
            self.router.submit(client, delimited, req.service, req.body, now)

    def _cancel(self, client: bytes, delimited: bool, req: ClientRequest, now: float) -> None:
        try:
            job = body_field(unpack_body(req.body), "job", str, None) if req.body else None
        except BodyError as e:
            self.rejected.add("bad_request")
            self.outbox.error(client, delimited, req.service, f"{BAD_REQUEST}: {e}")
            return
        count = self.generate.cancel_client(client, now, job)
        self.outbox.reply(client, delimited, req.service, {"cancelled": count}, final=True)

    def _history(self, client: bytes, delimited: bool, req: ClientRequest) -> None:
        try:
            limit = limit_of(unpack_body(req.body) if req.body else {})
        except BodyError as e:
            self.rejected.add("bad_request")
            self.outbox.error(client, delimited, req.service, f"{BAD_REQUEST}: {e}")
            return
        self.outbox.reply(client, delimited, req.service, {"jobs": self.history.recent(limit)},
                          final=True)

    def _mmi(self, client: bytes, delimited: bool, req: ClientRequest) -> None:
        wanted = req.body[0] if req.body else b""
        own = (F.SERVICE_STATUS, F.SERVICE_CANCEL, F.SERVICE_HISTORY, F.MMI_SERVICE)
        known = wanted in own or bool(self.registry.serving(wanted))
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
            self.rejected.add("unknown_worker")
            self.outbox.send(identity, delimited, Disconnect())
        elif isinstance(msg, Heartbeat):
            self.registry.touch(identity, now)
        elif isinstance(msg, WorkerReply) and not slot.idle:
            self.registry.touch(identity, now)
            service = self.generate if slot.service == F.SERVICE_GENERATE else self.router
            service.on_reply(slot, msg, now)
        else:  # valid but unexpected (REQUEST, CANCEL, a reply while idle): RFC 18 says DISCONNECT
            name = type(msg).__name__
            if self.rejected.add("unexpected"):
                log.warning("worker sent an unexpected %s; disconnecting it", name,
                            extra=logs.kv(peer=slot.peer, slot=slot.profile.slot))
            self._disconnect(slot, f"sent an unexpected {name}", now)

    def _on_ready(self, identity: bytes, delimited: bool, msg: Ready, slot: Slot | None,
                  now: float) -> None:
        if slot is not None or msg.service.startswith(F.MMI_PREFIX) or \
                msg.service in (F.SERVICE_STATUS, F.SERVICE_CANCEL, F.SERVICE_HISTORY):
            self.rejected.add("unexpected")
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
        if self._refused(profile.name):
            self.outbox.send(identity, delimited, Disconnect())
            return
        profile = self._unique(profile)
        self.registry.add(identity, msg.service, profile, delimited, now,
                          anonymous=msg.profile is None)
        self.metrics.peer(profile.name)  # known from now on, also once it is gone
        log.info("worker ready for '%s' (%s, %s)", msg.service.decode(), profile.backend,
                 profile.model, extra=logs.kv(peer=profile.name, slot=profile.slot))
        self._dispatch(now)

    def _refused(self, name: str) -> bool:
        """A peer the config file disables: its slots are refused (a few log lines however
        often it comes back)."""
        settings = self.config.peers.get(name)
        if settings is None or not settings.disabled:
            return False
        if self.rejected.add("disabled_peer"):
            log.info("refused a READY from a disabled peer (%d so far)",
                     self.rejected["disabled_peer"], extra=logs.kv(peer=name))
        return True

    def _unique(self, profile: WorkerProfile) -> WorkerProfile:
        """Two worker processes that call themselves the same get two peer names."""
        holder = self.registry.holder(profile.name)
        if holder is None or holder.node == profile.node_id:
            return profile
        name = f"{profile.name}~{profile.node_id[:6]}"
        log.warning("two workers call themselves '%s' (nodes %s and %s); calling the new one '%s'",
                    profile.name, holder.node, profile.node_id, name, extra=logs.kv(peer=name))
        return replace(profile, name=name)

    def _disconnect(self, slot: Slot, reason: str, now: float) -> None:
        self.outbox.send(slot.identity, slot.delimited, Disconnect())
        self._lose(slot, reason, now)

    def _lose(self, slot: Slot, reason: str, now: float) -> None:
        self.registry.remove(slot.identity)
        job = slot.job[0] if isinstance(slot.job, tuple) else None  # a generate job's id
        log.info("worker gone: %s", reason,
                 extra=logs.kv(peer=slot.peer, slot=slot.profile.slot, job=job))
        service = self.generate if slot.service == F.SERVICE_GENERATE else self.router
        service.on_slot_lost(slot, reason, now)
        live = self.registry.names()
        if slot.anonymous and slot.peer not in live:
            self.metrics.forget(slot.peer)
        self.metrics.trim(live)

    def _dispatch(self, now: float) -> None:
        self.generate.dispatch(now)
        self.router.dispatch(now)

    # -- housekeeping --------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        """Each step guarded on its own: one failing step never starves the others."""
        self._guarded("purging silent workers", self._purge, now)
        for slot in self.registry.beats_due(now):
            self.outbox.send(slot.identity, slot.delimited, Heartbeat(), droppable=True)
        self._guarded("job timeouts", self._generate_tick, now)
        self._guarded("routing timeouts", self._route_tick, now)
        self._guarded("keeping state", self.keeper.tick, now)
        self.notifier.watchdog(now)  # from the loop itself: a wedged loop stops feeding it
        if not self.ready_sent and self.mdns_settled and self.stop_at is None:
            self.ready_sent = True  # bound, the HTTP API up (the CLI starts it first), advertised
            self.notifier.ready(f"serving on {self.endpoint}")

    def _purge(self, now: float) -> None:
        for slot in self.registry.purge(now):
            self.metrics.peer(slot.peer).heartbeat_misses += 1
            self._lose(slot, f"went silent for {slot.expiry_s:g} s", now)

    def _generate_tick(self, now: float) -> None:
        for slot in self.generate.tick(now):
            self._disconnect(slot, f"worked on past a CANCEL for {self.config.cancel_grace_s:g} s",
                             now)

    def _route_tick(self, now: float) -> None:
        for slot in self.router.tick(now):
            self._disconnect(slot, "did not answer a routed request in time", now)

    def _guarded(self, what: str, step, *args, **kwargs) -> None:
        try:
            step(*args, **kwargs)
        except Exception:
            self.stats["errors"] += 1
            log.exception("error in %s", what)

    def _broker_info(self, now: float) -> dict:
        return {"version": __version__, "endpoint": self.endpoint, "swarm": self.config.swarm,
                "uptime_s": round(now - self.started_at, 3),
                "stopping": self.stop_at is not None,  # draining: new jobs are refused
                "jobs_active": len(self.generate.jobs), **self.stats,
                "malformed": self.rejected["malformed"], "state": self.keeper.info(),
                **self.generate.stats, **self.delivery.stats, "rejected": self.rejections()}

    def rejections(self) -> dict[str, int]:
        """Every refusal by reason: at the door (here, and keys the ZAP door refused) and
        by the services and delivery."""
        gen, out = self.generate.stats, self.delivery.stats
        keys = {"refused_keys": self.stats["refused_keys"]} if "refused_keys" in self.stats else {}
        return {**self.rejected.to_map(), "busy": gen["busy"] + self.router.stats["busy"],
                "malformed_replies": gen["malformed_replies"],
                "stale_replies": gen["stale_replies"], "shed": out["shed"],
                "cut_off": out["cut_off"], **keys}
