"""From flags to loaded backends: probe the hardware, read the model's header, plan, load.

`prepare` does everything that needs no model load (so `--print-profile` is quick); `load`
then builds the backends the plan chose. Both are shared by `swarm-worker` and
`swarm-ask --local`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.hardware import Hardware
from common.hardware_probe import describe, detect
from worker.backend import Backend, LlamaCppBackend
from worker.gguf_info import ModelInfo, read_model_info
from worker.mlx_backend import mlx_available
from worker.model_files import resolve_model
from worker.policy import Plan, Requested, plan
from worker.prefix_cache import PrefixStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Setup:
    hardware: Hardware
    model: ModelInfo
    plan: Plan

    @property
    def path(self) -> Path:
        return Path(self.model.path)

    @property
    def n_ctx(self) -> int:
        """The context each instance loads with (0: the model's own, where it says none)."""
        return self.plan.n_ctx.value

    def to_map(self) -> dict[str, Any]:
        """What `--print-profile --json` prints."""
        m = self.model
        return {"hardware": self.hardware.to_map(),
                "model": {"path": m.path, "format": m.format, "architecture": m.architecture,
                          "name": m.name, "layers": m.n_layers, "size_bytes": m.size_bytes,
                          "context_length": m.context_length, "n_ctx": self.n_ctx},
                "plan": self.plan.to_map()}

    def lines(self) -> list[str]:
        """What `--print-profile` prints: the machine, the model, then each decision and why."""
        m = self.model
        model = (f"model: {m.name} ({m.format}, {m.architecture}, {m.n_layers} layers, "
                 f"{m.size_bytes / 2**30:.2f} GB, trained context {m.context_length or 'unknown'})")
        return ["hardware:", *(f"  {line}" for line in describe(self.hardware)),
                model, f"  {m.path}", "decisions:", *(f"  {line}" for line in self.plan.lines())]


def prepare(model_path: str | None, requested: Requested, progress: bool = True) -> Setup:
    """Probe, read the model's header and plan; ModelError or ConfigError in one sentence."""
    # NVML counts GPUs in bus order; make CUDA (and so tensor_split) count them alike
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    hardware = detect()
    path = resolve_model(model_path, progress=progress, android=hardware.platform == "android")
    info = read_model_info(path)
    chosen = plan(hardware, info, requested, mlx_available=mlx_available())
    return Setup(hardware, info, chosen)


def load(setup: Setup, prefix_cache: bool = True) -> list[Backend]:
    """The plan's backends, one per instance (each its own slot). llama.cpp instances share
    their evaluated prompts (worker/prefix_cache.py) unless `prefix_cache` is False."""
    p = setup.plan
    log.info("loading %d instance(s) of %s with %s (gpu layers %s, threads %s)",
             p.instances.value, setup.path, p.backend.value, p.gpu_layers.value, p.threads.value)
    if p.backend.value == "mlx":
        from worker.mlx_backend import MlxBackend
        n_ctx = setup.n_ctx or None  # 0: the model's own context
        return [MlxBackend(setup.path, n_ctx=n_ctx) for _ in range(p.instances.value)]
    split = list(p.tensor_split.value) if p.tensor_split.value else None
    store = PrefixStore()  # one model, one n_ctx: their states fit each other
    return [LlamaCppBackend(setup.path, setup.n_ctx, p.threads.value, p.gpu_layers.value, split,
                            prefix_store=store, prefix_cache=prefix_cache)
            for _ in range(p.instances.value)]
