"""How a worker runs its model on this machine: pure decisions over hardware and model.

Each `choose_*` function takes the hardware profile, the model's header info and what the
user asked for ("auto" or a value), and returns a Decision: the value and one short
sentence saying why, which `swarm-worker --print-profile` shows. `plan` composes them.
Memory is in MiB as the hardware profile counts it, shown as GB with one decimal.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from common.errors import ConfigError
from common.hardware import Gpu, Hardware
from worker.gguf_info import ModelInfo
from worker.memory import MIN_CAPABILITY, android, gpu_headroom_mb, room_mb, usable_gpus
# the CLIs and tests take these from here too
from worker.requested import AUTO, BACKENDS, Requested, parse_auto_int  # noqa: F401

CORES_PER_INSTANCE = 4
MAX_INSTANCES = 8
FALLBACK_CTX = 4096           # tokens, where the model's header does not say its trained context
MIN_AUTO_CTX = 4096           # auto plans at least this (or the trained context, if shorter)
CTX_ROOM_SHARE = 0.5          # all instances' contexts take at most half the room after headroom
CTX_STEP = 1024
_MB = 1 << 20


@dataclass(frozen=True, slots=True)
class Decision:
    value: Any
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    backend: Decision
    n_ctx: Decision
    gpu_layers: Decision
    tensor_split: Decision
    instances: Decision
    threads: Decision
    seed_variation: Decision

    def to_map(self) -> dict[str, dict[str, Any]]:
        """{decision: {"value": ..., "reason": ...}} for --print-profile --json."""
        out = {}
        for f in fields(self):
            d = getattr(self, f.name)
            value = list(d.value) if isinstance(d.value, tuple) else d.value
            out[f.name] = {"value": value, "reason": d.reason}
        return out

    def lines(self) -> list[str]:
        """One "name: value (reason)" line per decision, for --print-profile."""
        return [f"{name}: {_show(m['value'])} ({m['reason']})" for name, m in self.to_map().items()]


def plan(hw: Hardware, model: ModelInfo, req: Requested, mlx_available: bool = False) -> Plan:
    """Every decision, each from the ones before it."""
    backend = choose_backend(hw, model, req.backend, mlx_available)
    n_ctx = choose_n_ctx(hw, model, req.n_ctx, req.instances, req.gpu_layers, backend.value)
    layers = choose_gpu_layers(hw, model, req.gpu_layers, n_ctx.value, backend.value)
    split = choose_tensor_split(hw, layers.value, backend.value)
    instances = choose_instances(hw, model, req.instances, n_ctx.value, layers.value,
                                 backend.value)
    threads = choose_threads(hw, req.threads, instances.value)
    seeds = choose_seed_variation(hw, req.seed_variation, instances.value)
    return Plan(backend, n_ctx, layers, split, instances, threads, seeds)


def choose_backend(hw: Hardware, model: ModelInfo, requested: str,
                   mlx_available: bool) -> Decision:
    """mlx for an MLX model directory (where mlx-lm imports), llama.cpp for a GGUF file."""
    if requested == "mlx" and not mlx_available:
        raise ConfigError("--backend mlx needs mlx-lm, which does not import here "
                          "(pip install mlx-lm)")
    if requested != AUTO:
        wanted = "mlx" if requested == "mlx" else "gguf"
        if model.format != wanted:
            kind = "an MLX model directory" if wanted == "mlx" else "a GGUF file"
            raise ConfigError(f"--backend {requested} needs {kind} as --model, and "
                              f"{model.path} is not one")
        return Decision(requested, "set by --backend")
    if model.format == "mlx":
        if not mlx_available:
            raise ConfigError(f"{model.path} is an MLX model directory, but mlx-lm does not "
                              "import here (pip install mlx-lm)")
        where = "" if hw.apple_silicon else " (on the CPU: not Apple Silicon)"
        return Decision("mlx", f"the model is an MLX directory{where}")
    if not hw.apple_silicon:
        return Decision("llama.cpp", "not Apple Silicon; the model is a GGUF file")
    if not mlx_available:
        return Decision("llama.cpp", "mlx-lm is not installed; the model is a GGUF file")
    return Decision("llama.cpp", "the model is a GGUF file (mlx takes an MLX directory)")


def choose_n_ctx(hw: Hardware, model: ModelInfo, requested: int | str | None,
                 instances: int | str | None, gpu_layers: int | str | None,
                 backend: str) -> Decision:
    """Tokens of context per instance: the model's trained context, capped by memory.

    The room is the free VRAM where layers go to a GPU, else the available RAM, after the
    usual headroom; the contexts of all instances (1 unless --instances says) take at most
    half of it, the rest staying free for more instances and for what the estimate misses.
    """
    trained = model.context_length
    if requested == 0:
        return Decision(trained, "the model's trained context, set by --n-ctx 0" if trained
                        else "the model's trained context (unknown here), set by --n-ctx 0")
    if _given(requested):
        return Decision(requested, "set by --n-ctx")
    if not trained:
        return Decision(FALLBACK_CTX, "the model's header does not say its trained context")
    room, where = room_mb(hw, backend, gpu_layers)
    if room is None:
        n = min(trained, FALLBACK_CTX)
        return Decision(n, f"{n} of the model's {trained} tokens: available RAM unknown")
    copies = instances if _given(instances) else 1
    half = max(0.0, room) * CTX_ROOM_SHARE
    fits = model.context_for(half / copies * _MB) // CTX_STEP * CTX_STEP
    n = min(trained, max(fits, MIN_AUTO_CTX))
    need = f"{copies} x {_gb(model.need_bytes(n) / _MB)}"
    where = f"half the {_gb(half * 2)} of free {where} after headroom"
    what = "the model's trained context" if n == trained else f"{n} of the model's {trained} tokens"
    if n <= fits:
        return Decision(n, f"{what}: {need} fits in {where}")
    return Decision(n, f"{what}, though {need} may not fit in {where}")


def choose_gpu_layers(hw: Hardware, model: ModelInfo, requested: int | str | None, n_ctx: int,
                      backend: str) -> Decision:
    """-1 (all) where the model fits on the GPU, as many layers as fit, or 0 and why not."""
    if _given(requested):
        return Decision(requested, "set by --gpu-layers")
    if backend == "mlx":
        if hw.apple_silicon:
            return Decision(-1, "all: mlx runs the whole model on the GPU, in unified memory")
        return Decision(0, "none: mlx runs on the CPU here")
    if android(hw):
        return Decision(0, "none: llama.cpp runs on the CPU on Android")
    if not hw.gpus and not hw.apple_silicon:
        return Decision(0, "none: no GPU found, CPU only")
    if not hw.gpu_offload:
        return Decision(0, "none: this llama.cpp build cannot offload to a GPU")
    if hw.apple_silicon:
        return Decision(-1, f"all {model.offload_layers} layers: Metal, on unified memory")
    gpus = usable_gpus(hw)
    if not gpus:
        old = ", ".join(f"{g.name} {g.compute_capability}" for g in hw.gpus)
        return Decision(0, f"none: every GPU is below compute capability {MIN_CAPABILITY} "
                           f"({old})")
    return _fit_layers(model, gpus, n_ctx)


def _fit_layers(model: ModelInfo, gpus: tuple[Gpu, ...], n_ctx: int) -> Decision:
    free = sum(g.vram_free_mb for g in gpus)
    room = free - gpu_headroom_mb(gpus)
    need = model.need_bytes(n_ctx) / _MB
    if need <= room:
        return Decision(-1, f"all {model.offload_layers} layers: the {_gb(model.size_bytes / _MB)}"
                            f" model and its cache fit in {_gb(free)} of free VRAM with "
                            f"{_gb(free - room)} headroom")
    per_layer = max(1.0, model.layer_need_bytes(n_ctx) / _MB)
    n = max(0, min(model.n_layers, int((room - model.compute_bytes(n_ctx) / _MB) // per_layer)))
    what = f"{n} of {model.offload_layers} layers" if n else "none"
    return Decision(n, f"{what}: the model and its cache need {_gb(need)}, over the "
                       f"{_gb(free)} of free VRAM less {_gb(free - room)} headroom; "
                       f"{_gb(per_layer)} a layer")


def choose_tensor_split(hw: Hardware, gpu_layers: int, backend: str) -> Decision:
    """Shares of the offloaded layers per GPU (by index) in proportion to free VRAM."""
    if backend != "llama.cpp" or gpu_layers == 0 or len(hw.gpus) < 2:
        return Decision(None, "one GPU or none in use: no split")
    usable = {g.index for g in usable_gpus(hw)}
    ordered = sorted(hw.gpus, key=lambda g: g.index)
    free = [g.vram_free_mb if g.index in usable else 0 for g in ordered]
    total = sum(free)
    if not total:
        return Decision(None, "no free VRAM reported: llama.cpp's own split")
    shares = tuple(f / total for f in free)
    shown = ", ".join(f"GPU {g.index} {s:.0%}" for g, s in zip(ordered, shares))
    return Decision(shares, f"by free VRAM: {shown}")


def choose_instances(hw: Hardware, model: ModelInfo, requested: int | str | None, n_ctx: int,
                     gpu_layers: int, backend: str) -> Decision:
    """How many copies fit in memory, capped by cores (4 each) and at 8; 1 on Android."""
    if _given(requested):
        return Decision(requested, "set by --instances")
    if android(hw):
        return Decision(1, "one instance on Android")
    room, where = room_mb(hw, backend, gpu_layers)
    if room is None:
        return Decision(1, "one instance: available RAM unknown")
    each = (_gpu_share_mb(model, n_ctx, gpu_layers) if where == "VRAM"
            else model.need_bytes(n_ctx) / _MB)
    fit = int(room // each) if room > 0 else 0
    if fit < 1:
        return Decision(1, f"one instance, though its {_gb(each)} may not fit in the "
                           f"{_gb(max(0, room))} of free {where} left after headroom")
    cores = _cores(hw)
    cap = max(1, cores // CORES_PER_INSTANCE)
    n = min(fit, cap, MAX_INSTANCES)
    why = (f"{_count(fit, 'copy', 'copies')} of {_gb(each)} {'fits' if fit == 1 else 'fit'} "
           f"in {_gb(room)} of free {where} after headroom")
    if n < fit:
        why += (f"; {cores} cores allow {cap} ({CORES_PER_INSTANCE} each)" if n == cap
                else f"; at most {MAX_INSTANCES}")
    return Decision(n, why)


def choose_threads(hw: Hardware, requested: int | str | None, instances: int) -> Decision:
    """CPU threads per instance: the cores shared out (llama.cpp's own default is half)."""
    if _given(requested):
        return Decision(requested, "set by --threads")
    cores = _cores(hw)
    if not cores:
        return Decision(1, "core count unknown: 1 thread")
    kind = "physical" if hw.cores_physical else "logical"
    n = max(1, cores // max(1, instances))
    return Decision(n, f"{cores} {kind} cores over {_count(instances, 'instance')}")


def choose_seed_variation(hw: Hardware, requested: bool | None, instances: int) -> Decision:
    """Whether one slot may take several candidates of a job, each with its own seed.

    On where one instance must serve several candidates, or memory is unified. On with several
    instances too: the broker spreads a job over free slots first, so a slot takes a second
    candidate only when the job has more candidates than there are slots, and with it off
    those candidates would fail ("no slot can take it") instead of waiting for a slot.
    """
    if requested is not None:
        flag = "--seed-variation" if requested else "--no-seed-variation"
        return Decision(requested, f"set by {flag}")
    if instances == 1:
        return Decision(True, "one instance takes several candidates of a job")
    if hw.unified_memory:
        return Decision(True, "unified memory: a slot may take several candidates")
    return Decision(True, f"a job's candidates go to the {instances} instances first; a slot "
                          "takes a second one only when they are all busy with it")


def _gpu_share_mb(model: ModelInfo, n_ctx: int, gpu_layers: int) -> float:
    if gpu_layers < 0 or gpu_layers >= model.offload_layers:
        return model.need_bytes(n_ctx) / _MB
    return (gpu_layers * model.layer_need_bytes(n_ctx) + model.compute_bytes(n_ctx)) / _MB


def _given(requested: Any) -> bool:
    return requested is not None and requested != AUTO


def _cores(hw: Hardware) -> int:
    return hw.cores_physical or hw.cores_logical


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB"


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.2f}" for v in value) + "]"
    return "off" if value is False else "on" if value is True else str(value)
