"""Where a model instance's memory lives, and how much of it is free after headroom.

Pure arithmetic over the hardware profile, in MiB as the profile counts it, shared by the
policy's choices of context length, GPU layers and instances (worker/policy.py).
"""

from __future__ import annotations

from common.hardware import Gpu, Hardware

MIN_CAPABILITY = 5.0          # llama.cpp's CUDA build needs Maxwell or newer
GPU_HEADROOM_MB = 1024        # kept free on each GPU: max(1 GB, 10% of its free VRAM)
GPU_HEADROOM_SHARE = 0.10
RAM_HEADROOM_MB = 2048        # kept free in RAM: max(2 GB, 20% of the available RAM)
RAM_HEADROOM_SHARE = 0.20


def usable_gpus(hw: Hardware) -> tuple[Gpu, ...]:
    """GPUs llama.cpp's CUDA build can use: compute capability 5.0 or above (or unknown)."""
    return tuple(g for g in hw.gpus if g.capability is None or g.capability >= MIN_CAPABILITY)


def gpu_headroom_mb(gpus: tuple[Gpu, ...]) -> float:
    return sum(max(GPU_HEADROOM_MB, GPU_HEADROOM_SHARE * g.vram_free_mb) for g in gpus)


def ram_headroom_mb(hw: Hardware) -> float:
    return max(RAM_HEADROOM_MB, RAM_HEADROOM_SHARE * hw.ram_available_mb)


def android(hw: Hardware) -> bool:
    return hw.platform == "android" or hw.termux


def room_mb(hw: Hardware, backend: str, gpu_layers: int | str | None) -> tuple[float | None, str]:
    """(free MiB after headroom, "VRAM" or "RAM") where an instance's cache lives: the
    usable GPUs' VRAM when llama.cpp offloads layers to them ("auto" may), else the
    available RAM (also unified memory and mlx); None when the available RAM is unknown."""
    gpus = usable_gpus(hw)
    if backend == "llama.cpp" and gpu_layers != 0 and gpus and hw.gpu_offload \
            and not hw.unified_memory and not android(hw):
        return sum(g.vram_free_mb for g in gpus) - gpu_headroom_mb(gpus), "VRAM"
    if not hw.ram_available_mb:
        return None, "RAM"
    return hw.ram_available_mb - ram_headroom_mb(hw), "RAM"
