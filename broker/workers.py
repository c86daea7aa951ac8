"""The broker's worker side: READY, heartbeats, replies, and a worker's end.

Apart from the socket loop because it is the MDP worker rules (RFC 18) on their own: who
may join (not twice, not a disabled peer, under a name of its own), what a joined worker
may send, and what happens to its slot when it says goodbye, goes silent, works past a
CANCEL or sends what it must not: DISCONNECT, and its work goes back to its service.
It writes what it wants sent into the outbox, like the services; it touches no socket.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from broker.generate import GenerateService
from broker.metrics import MetricsBook
from broker.outbox import Outbox
from broker.peers import PeerSettings
from broker.registry import Registry, Slot
from broker.routing import Router
from broker.services import OwnServices
from common import frames as F
from common import logs
from common.errors import BodyError, ProtocolError
from common.messages import Disconnect, Heartbeat, Ready, WorkerReply
from common.profile import WorkerProfile
from common.rejections import Rejections

log = logging.getLogger(__name__)


class Workers:
    def __init__(self, registry: Registry, metrics: MetricsBook, outbox: Outbox,
                 generate: GenerateService, router: Router, rejected: Rejections,
                 peers: dict[str, PeerSettings]):
        self.registry, self.metrics, self.outbox = registry, metrics, outbox
        self.generate, self.router, self.rejected = generate, router, rejected
        self.peers = peers  # [peers] of the config file: who is disabled

    def on_message(self, identity: bytes, delimited: bool, msg, now: float) -> None:
        slot = self.registry.get(identity)
        if isinstance(msg, Ready):
            self._on_ready(identity, delimited, msg, slot, now)
        elif isinstance(msg, Disconnect):
            if slot is not None:
                self.lose(slot, "disconnected", now)
        elif slot is None:
            # a worker we do not know (we restarted, or it was purged): make it start over
            self.rejected.add("unknown_worker")
            self.outbox.send(identity, delimited, Disconnect())
        elif isinstance(msg, Heartbeat):
            self.registry.touch(identity, now)
        elif isinstance(msg, WorkerReply) and not slot.idle:
            self.registry.touch(identity, now)
            self._service(slot).on_reply(slot, msg, now)
        else:  # valid but unexpected (REQUEST, CANCEL, a reply while idle): RFC 18 says DISCONNECT
            name = type(msg).__name__
            if self.rejected.add("unexpected"):
                log.warning("worker sent an unexpected %s; disconnecting it", name,
                            extra=logs.kv(peer=slot.peer, slot=slot.profile.slot))
            self.disconnect(slot, f"sent an unexpected {name}", now)

    def _on_ready(self, identity: bytes, delimited: bool, msg: Ready, slot: Slot | None,
                  now: float) -> None:
        if slot is not None or OwnServices.serves(msg.service):  # the broker's own: no worker's
            self.rejected.add("unexpected")
            if slot is not None:
                self.disconnect(slot, "sent READY twice", now)
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
        self.generate.dispatch(now)
        self.router.dispatch(now)

    def _refused(self, name: str) -> bool:
        """A peer the config file disables: its slots are refused (a few log lines however
        often it comes back)."""
        settings = self.peers.get(name)
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

    def _service(self, slot: Slot) -> GenerateService | Router:
        return self.generate if slot.service == F.SERVICE_GENERATE else self.router

    def disconnect(self, slot: Slot, reason: str, now: float) -> None:
        self.outbox.send(slot.identity, slot.delimited, Disconnect())
        self.lose(slot, reason, now)

    def lose(self, slot: Slot, reason: str, now: float) -> None:
        self.registry.remove(slot.identity)
        job = slot.job[0] if isinstance(slot.job, tuple) else None  # a generate job's id
        log.info("worker gone: %s", reason,
                 extra=logs.kv(peer=slot.peer, slot=slot.profile.slot, job=job))
        self._service(slot).on_slot_lost(slot, reason, now)
        live = self.registry.names()
        if slot.anonymous and slot.peer not in live:
            self.metrics.forget(slot.peer)
        self.metrics.trim(live)

    # -- housekeeping steps (the loop guards each on its own) ------------------------------
    def purge(self, now: float) -> None:
        for slot in self.registry.purge(now):
            self.metrics.peer(slot.peer).heartbeat_misses += 1
            self.lose(slot, f"went silent for {slot.expiry_s:g} s", now)

    def generate_tick(self, now: float) -> None:
        grace_s = self.generate.cancel_grace_s
        for slot in self.generate.tick(now):
            self.disconnect(slot, f"worked on past a CANCEL for {grace_s:g} s", now)

    def route_tick(self, now: float) -> None:
        for slot in self.router.tick(now):
            self.disconnect(slot, "did not answer a routed request in time", now)
