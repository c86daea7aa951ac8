"""The worker profile: what a slot says about itself in its READY extension frame."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from common import __version__
from common.codec import pack, unpack
from common.errors import BodyError
from common.hardware import Hardware


MAX_TIMEOUT_S = 86400.0
MAX_HEARTBEAT_S = 60.0
MAX_LIVENESS = 1000  # missed heartbeats before a peer is dead (past a float's range: a traceback)
MAX_COUNT = 1 << 16  # slots, slot index, GPU layers
MAX_TEXT = 256  # characters of a name, host, model, ...
MAX_CTX = 1 << 24  # tokens of a context window


@dataclass(frozen=True, slots=True)
class WorkerProfile:
    name: str                    # the peer's display name; metrics are keyed by it
    node_id: str = ""            # unique per worker process; slots of one node share it
    host: str = ""
    backend: str = "unknown"
    model: str = ""
    slots: int = 1               # slots this node runs
    slot: int = 0                # which of them this connection is
    seed_variation: bool = False  # may take a second candidate of one job
    cancel: bool = False         # understands the CANCEL extension
    timeout_s: float | None = None  # the worker's hint for its per-candidate timeout
    heartbeat_s: float | None = None  # the interval this worker beats at and expects beats
    gpu_layers: int = 0          # layers offloaded to the GPU per instance (-1: all)
    n_ctx: int = 0               # the context window each slot's model was loaded with (0: unknown)
    swarm: str = "default"       # the swarm this worker belongs to (mDNS keeps swarms apart)
    hardware: Hardware = field(default_factory=Hardware)
    version: str = __version__

    def to_frame(self) -> bytes:
        return pack(self.to_map())

    @classmethod
    def from_frame(cls, frame: bytes | None, fallback_name: str) -> "WorkerProfile":
        """Decode the READY extension frame; a strict MDP worker sends none."""
        if frame is None:
            return cls(name=fallback_name, node_id=fallback_name)
        m = unpack(frame)
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in m.items():
            if key in known and value is not None:
                kwargs[key] = value
        if "hardware" in kwargs:
            kwargs["hardware"] = Hardware.from_map(kwargs["hardware"])
        try:
            profile = cls(**{"name": fallback_name, **kwargs})
        except TypeError as e:
            raise BodyError(f"worker profile is malformed: {e}") from e
        _check_types(profile)
        return profile if profile.node_id else _with(profile, node_id=profile.name)

    def to_map(self) -> dict[str, Any]:
        m = asdict(self)
        m["hardware"] = self.hardware.to_map()
        return m


def _with(profile: WorkerProfile, **changes: Any) -> WorkerProfile:
    return replace(profile, **changes)


def _check_types(p: WorkerProfile) -> None:
    for name, kind in (("name", str), ("node_id", str), ("host", str), ("backend", str),
                       ("model", str), ("version", str), ("swarm", str)):
        value = getattr(p, name)
        if not isinstance(value, kind) or len(value) > MAX_TEXT:
            raise BodyError(f"profile field '{name}' must be a string of at most {MAX_TEXT} "
                            "characters", name)
    for name, lo, hi in (("slots", 0, MAX_COUNT), ("slot", 0, MAX_COUNT),
                         ("gpu_layers", -1, MAX_COUNT), ("n_ctx", 0, MAX_CTX)):
        value = getattr(p, name)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise BodyError(f"profile field '{name}' must be an integer from {lo} to {hi}", name)
    for name in ("seed_variation", "cancel"):
        if not isinstance(getattr(p, name), bool):
            raise BodyError(f"profile field '{name}' must be a boolean", name)
    for name, lo, hi in (("timeout_s", 0.001, MAX_TIMEOUT_S), ("heartbeat_s", 0.01, MAX_HEARTBEAT_S)):
        value = getattr(p, name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or not lo <= value <= hi:
            raise BodyError(f"profile field '{name}' must be a number from {lo:g} to {hi:g}", name)
    if not p.name:
        raise BodyError("profile field 'name' must not be empty", "name")


DEFAULT_NAME_ENV = "SWARM_DEFAULT_NAME"  # set by the systemd template: HOST-INSTANCE


def default_name() -> str:
    """A worker's name where neither --name nor its config file gives one."""
    return os.environ.get(DEFAULT_NAME_ENV, "").strip() or socket.gethostname() or "worker"
