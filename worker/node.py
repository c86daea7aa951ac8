"""A worker node: N model instances served as N slots, each its own MDP session.

The node advertises itself on mDNS (one record per node, not per slot) unless told not to,
and where it was given no broker it finds one there: each slot, whenever it (re)connects,
connects to the broker that discovery knows at that moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import psutil
import zmq.asyncio

from common import frames as F
from common import logs
from common.discovery import worker_mdns
from common.hardware import Hardware
from common.mdns import DEFAULT_SWARM
from common.node_id import node_id
from common.profile import WorkerProfile
from common.sdnotify import Notifier
from worker.backend import Backend
from worker.session import GOODBYE_LINGER_MS, SessionConfig, WorkerSession

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 30.0  # how long a slot may take to finish its candidate once told to stop


def node_profile(name: str, backend: Backend, slots: int, seed_variation: bool,
                 host: str, timeout_s: float | None = None,
                 hardware: Hardware | None = None, gpu_layers: int = 0,
                 swarm: str = DEFAULT_SWARM) -> WorkerProfile:
    """The profile every slot of this node advertises (each with its own slot index); the
    node id stays the same for this name on this machine across restarts."""
    return WorkerProfile(
        name=name, node_id=node_id(name), host=host, backend=backend.name,
        model=backend.model, slots=slots, seed_variation=seed_variation, cancel=True,
        timeout_s=timeout_s, gpu_layers=gpu_layers, swarm=swarm,
        hardware=hardware or _basic_hardware(),
    )


def slot_profile(profile: WorkerProfile, slot: int, backend: Backend) -> WorkerProfile:
    """The node's profile for one slot: its index, and the context its model really loaded."""
    n_ctx = getattr(backend, "n_ctx", 0)  # a backend that cannot say reports 0: unknown
    return replace(profile, slot=slot, n_ctx=n_ctx if isinstance(n_ctx, int) else 0)


def _basic_hardware() -> Hardware:
    return Hardware(cores_logical=psutil.cpu_count() or 0,
                    ram_total_mb=psutil.virtual_memory().total >> 20)


class WorkerNode:
    """`config.broker` None: find the broker on mDNS (needs `mdns`). `notifier` tells
    systemd READY (models loaded, advert registered, slots started), STOPPING, and feeds
    its watchdog from this loop."""

    def __init__(self, config: SessionConfig, profile: WorkerProfile, backends: Sequence[Backend],
                 ctx: zmq.asyncio.Context | None = None, mdns: bool = False,
                 notifier: Notifier | None = None, shutdown_grace_s: float = SHUTDOWN_GRACE_S):
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.config, self.profile, self.backends, self.mdns = config, profile, backends, mdns
        self.notifier = notifier or Notifier()
        self.shutdown_grace_s = shutdown_grace_s
        self.sessions: list[WorkerSession] = []
        self.stopping = False

    def close(self) -> None:
        """After `run`: let the last FINALs and DISCONNECTs leave before the process ends
        (a context not terminated drops what its sockets still queue)."""
        self.ctx.destroy(linger=GOODBYE_LINGER_MS)

    def shutdown(self) -> None:
        """Stop gracefully (a signal handler calls this): each slot finishes its candidate
        within the grace, says DISCONNECT and ends; then `run` returns."""
        if self.stopping:
            return
        self.stopping = True
        log.info("worker %s stopping: slots get %g s to finish", self.profile.name,
                 self.shutdown_grace_s, extra=logs.kv(peer=self.profile.name))
        self.notifier.stopping(f"finishing within {self.shutdown_grace_s:g} s")
        for session in self.sessions:
            session.stop(self.shutdown_grace_s)

    async def run(self) -> None:
        find = self.config.broker is None
        pin = self.config.curve.server if self.config.curve is not None else None
        settled = asyncio.Event()
        async with worker_mdns(self.profile, find, self.mdns, pin,
                               on_settled=settled.set) as finder:
            config, where = self.config, self.config.broker
            if finder is not None:
                config = replace(config, find_broker=finder.wait)
                where = f"the broker found on mDNS (swarm {self.profile.swarm})"
                where += f" whose key is {pin}" if pin else ""
            elif find:
                where = F.DEFAULT_BROKER_CONNECT
                log.warning("no mDNS to find the broker with; trying %s (--broker chooses one)",
                            where)
                config = replace(config, broker=where)
            self.sessions = [WorkerSession(self.ctx, config, slot_profile(self.profile, i, b), b)
                             for i, b in enumerate(self.backends)]
            log.info("worker up: %d slot(s) serving %s", len(self.sessions), where,
                     extra=logs.kv(peer=self.profile.name))
            if self.stopping:  # told to stop while the advert was being set up
                return
            slots = asyncio.gather(*(s.run() for s in self.sessions))
            keeper = asyncio.ensure_future(self._systemd(settled, where))
            try:
                await slots
            finally:
                keeper.cancel()

    async def _systemd(self, settled: asyncio.Event, where: str) -> None:
        """READY once the advert is settled (the slots are started), then feed the watchdog
        from this loop: a wedged loop stops feeding it."""
        await settled.wait()
        if not self.stopping:
            self.notifier.ready(f"{len(self.sessions)} slot(s) serving {where}")
        interval_s = self.notifier.watchdog_s
        while interval_s:
            self.notifier.watchdog(time.monotonic())
            await asyncio.sleep(interval_s / 4)
