"""A worker node: N model instances served as N slots, each its own MDP session."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace

import psutil
import zmq.asyncio

from common.hardware import Hardware
from common.profile import WorkerProfile
from worker.backend import Backend
from worker.session import SessionConfig, WorkerSession

log = logging.getLogger(__name__)


def node_profile(name: str, backend: Backend, slots: int, seed_variation: bool,
                 host: str, timeout_s: float | None = None,
                 hardware: Hardware | None = None, gpu_layers: int = 0) -> WorkerProfile:
    """The profile every slot of this node advertises (each with its own slot index)."""
    return WorkerProfile(
        name=name, node_id=uuid.uuid4().hex[:12], host=host, backend=backend.name,
        model=backend.model, slots=slots, seed_variation=seed_variation, cancel=True,
        timeout_s=timeout_s, gpu_layers=gpu_layers, hardware=hardware or _basic_hardware(),
    )


def _basic_hardware() -> Hardware:
    return Hardware(cores_logical=psutil.cpu_count() or 0,
                    ram_total_mb=psutil.virtual_memory().total >> 20)


class WorkerNode:
    def __init__(self, config: SessionConfig, profile: WorkerProfile, backends: Sequence[Backend],
                 ctx: zmq.asyncio.Context | None = None):
        ctx = ctx or zmq.asyncio.Context.instance()
        self.sessions = [WorkerSession(ctx, config, replace(profile, slot=i), b)
                         for i, b in enumerate(backends)]

    async def run(self) -> None:
        log.info("worker %s: %d slot(s) serving %s", self.sessions[0].profile.name,
                 len(self.sessions), self.sessions[0].config.broker)
        await asyncio.gather(*(s.run() for s in self.sessions))
