"""Probes that fill the hardware profile, each failing softly.

A missing library, file, command or permission, or a raising NVML call, leaves its field
"unknown", 0 or False and logs at debug why; `detect` never raises. Everything the probes
read comes in through `Sources`, so a test fakes a Mac, a phone or a GPU box on any machine.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from common.hardware import MAX_CORES, MAX_GPUS, MAX_HW_TEXT, MAX_MB, UNKNOWN, Gpu, Hardware

log = logging.getLogger(__name__)

MB = 1 << 20
SYSCTL_TIMEOUT_S = 5.0
_SYSTEMS = {"Linux": "linux", "Darwin": "macos", "Windows": "windows"}
_CPUINFO_KEYS = ("model name", "Hardware", "Processor")   # x86, then ARM spellings
_BUILD_PROPS = ("system/build.prop", "vendor/build.prop")


def run_sysctl(key: str) -> str | None:
    """`sysctl -n KEY` (macOS), None when the command or the key is missing."""
    try:
        done = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True,
                              timeout=SYSCTL_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("sysctl %s failed: %s", key, e)
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def import_nvml() -> Any:
    """The pynvml module from nvidia-ml-py, None when it is not installed."""
    try:
        import pynvml
    except ImportError as e:
        log.debug("no NVML bindings: %s", e)
        return None
    return pynvml


def llama_gpu_offload() -> bool:
    """Whether the installed llama.cpp build can offload layers to a GPU (imported lazily)."""
    try:
        import llama_cpp
    except Exception as e:  # a broken native build raises more than ImportError
        log.debug("llama_cpp does not import: %s", e)
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


@dataclass(frozen=True, slots=True)
class Sources:
    """What the probes read; every field defaults to this machine's real source."""
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    root: Path = Path("/")                       # /proc, /sys and /system are read under it
    system: str = field(default_factory=platform.system)
    machine: str = field(default_factory=platform.machine)
    sysctl: Callable[[str], str | None] = run_sysctl
    cpu_count: Callable[..., int | None] = psutil.cpu_count   # called with logical=
    virtual_memory: Callable[[], Any] = psutil.virtual_memory
    nvml: Any = field(default_factory=import_nvml)
    gpu_offload: Callable[[], bool] = llama_gpu_offload


def detect(sources: Sources | None = None) -> Hardware:
    """This machine's hardware profile (or the one `sources` fakes); never raises."""
    src = sources or Sources()
    plat, termux = probe_platform(src)
    apple = probe_apple_silicon(src)
    gpus, driver = probe_nvidia(src.nvml, src.env.get("CUDA_VISIBLE_DEVICES"))
    total_mb, available_mb = probe_memory(src)
    return Hardware(
        os=_text(src.system), arch=_text(src.machine), platform=plat, termux=termux,
        apple_silicon=apple, chip=probe_chip(src, plat), unified_memory=apple,
        cores_physical=_cores(src, logical=False), cores_logical=_cores(src, logical=True),
        ram_total_mb=total_mb, ram_available_mb=available_mb,
        gpus=gpus, gpu_driver=driver,
        gpu_offload=bool(_soft(src.gpu_offload, False, "gpu offload")),
    )


def probe_platform(src: Sources) -> tuple[str, bool]:
    """(platform, termux): android on any Android sign, else from platform.system()."""
    env = src.env
    termux = bool(env.get("TERMUX_VERSION")) or "com.termux" in env.get("PREFIX", "")
    android = (termux or bool(env.get("ANDROID_ROOT")) or bool(env.get("ANDROID_DATA"))
               or _exists(src.root / "system/build.prop")
               or "android" in _read(src.root / "proc/sys/kernel/osrelease").lower())
    if android:
        return "android", termux
    return _SYSTEMS.get(src.system, UNKNOWN), False


def probe_apple_silicon(src: Sources) -> bool:
    """Darwin on arm64; sysctl hw.optional.arm64 also catches a Python under Rosetta."""
    if src.system != "Darwin":
        return False
    if src.machine.lower() in ("arm64", "aarch64"):
        return True
    return _soft(lambda: src.sysctl("hw.optional.arm64"), None, "sysctl") == "1"


def probe_chip(src: Sources, plat: str) -> str:
    """The chip's name: sysctl on macOS, build.prop's SoC on Android, else /proc/cpuinfo."""
    if src.system == "Darwin":
        return _text(_soft(lambda: src.sysctl("machdep.cpu.brand_string"), None, "sysctl"))
    if plat == "android":
        soc = _android_soc(src.root)
        if soc:
            return _text(soc)
    return _text(cpuinfo_chip(_read(src.root / "proc/cpuinfo")))


def cpuinfo_chip(text: str) -> str | None:
    """The first of "model name", "Hardware", "Processor" found in /proc/cpuinfo text."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if sep and value and key in _CPUINFO_KEYS:
            found.setdefault(key, value)
    return next((found[k] for k in _CPUINFO_KEYS if k in found), None)


def _android_soc(root: Path) -> str | None:
    """"Qualcomm SM8550" from ro.soc.manufacturer/model, else ro.product.model, else None."""
    props: dict[str, str] = {}
    for name in _BUILD_PROPS:
        for line in _read(root / name).splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                props.setdefault(key.strip(), value.strip())
    soc = props.get("ro.soc.model")
    if soc:
        maker = props.get("ro.soc.manufacturer", "")
        return f"{maker} {soc}".strip()
    return props.get("ro.product.model") or None


def _cores(src: Sources, logical: bool) -> int:
    count = _soft(lambda: src.cpu_count(logical=logical), None, "cpu count")
    return _bounded(count, MAX_CORES)


def probe_memory(src: Sources) -> tuple[int, int]:
    """(total, available) RAM in MB; 0 for what psutil cannot tell."""
    mem = _soft(src.virtual_memory, None, "virtual memory")
    return (_bounded(getattr(mem, "total", None), MAX_MB * MB) // MB,
            _bounded(getattr(mem, "available", None), MAX_MB * MB) // MB)


def probe_nvidia(nvml: Any, visible: str | None = None) -> tuple[tuple[Gpu, ...], str]:
    """(GPUs, driver version) through NVML; ((), "") without NVML or a driver. `visible` is
    CUDA_VISIBLE_DEVICES: only the GPUs CUDA will show, in its order and numbering."""
    if nvml is None:
        return (), ""
    try:
        nvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        log.debug("NVML does not start: %s", e)
        return (), ""
    try:
        count = _bounded(_soft(nvml.nvmlDeviceGetCount, 0, "NVML device count"), MAX_GPUS)
        driver = _text(_soft(nvml.nvmlSystemGetDriverVersion, None, "NVML driver"), "")
        gpus = [_nvidia_gpu(nvml, i) for i in range(count)]
        if visible is not None:
            gpus = cuda_visible(gpus, [_uuid(nvml, i) for i in range(count)], visible)
        return tuple(gpus), driver
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as e:
            log.debug("NVML shutdown failed: %s", e)


def cuda_visible(gpus: list[Gpu], uuids: list[str], visible: str) -> list[Gpu]:
    """The GPUs CUDA_VISIBLE_DEVICES leaves, renumbered 0.. in its order, as CUDA does: each
    entry an index or a (prefix of a) UUID; an entry that names no GPU ends the list."""
    chosen: list[Gpu] = []
    for entry in (e.strip() for e in visible.split(",")):
        match = [i for i, u in enumerate(uuids) if entry.startswith("GPU-") and u.startswith(entry)]
        index = int(entry) if entry.isdigit() else (match[0] if len(match) == 1 else -1)
        if not 0 <= index < len(gpus) or any(g.index == index for g in chosen):
            break
        chosen.append(gpus[index])
    return [replace(g, index=n) for n, g in enumerate(chosen)]


def _uuid(nvml: Any, index: int) -> str:
    uuid = _soft(lambda: nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(index)), None,
                 f"NVML uuid {index}")
    return _text(uuid, "")


def _nvidia_gpu(nvml: Any, index: int) -> Gpu:
    """One device; a failing call leaves only its own field unknown."""
    handle = _soft(lambda: nvml.nvmlDeviceGetHandleByIndex(index), None, f"NVML handle {index}")
    if handle is None:
        return Gpu(index=index)
    name = _soft(lambda: nvml.nvmlDeviceGetName(handle), None, f"NVML name {index}")
    mem = _soft(lambda: nvml.nvmlDeviceGetMemoryInfo(handle), None, f"NVML memory {index}")
    cc = _soft(lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle), None,
               f"NVML compute capability {index}")
    return Gpu(index=index, name=_text(name),
               vram_total_mb=_bounded(getattr(mem, "total", None), MAX_MB * MB) // MB,
               vram_free_mb=_bounded(getattr(mem, "free", None), MAX_MB * MB) // MB,
               compute_capability=_capability(cc))


def _capability(cc: Any) -> str:
    try:
        major, minor = cc
        return f"{int(major)}.{int(minor)}"
    except (TypeError, ValueError):
        return ""


def describe(hw: Hardware) -> list[str]:
    """Short human lines for --print-profile."""
    lines = [f"platform: {hw.platform}{' (Termux)' if hw.termux else ''}, {hw.os} {hw.arch}"]
    extra = ", Apple Silicon, unified memory" if hw.apple_silicon else ""
    lines.append(f"chip: {hw.chip}{extra}")
    lines.append(f"cores: {hw.cores_physical or '?'} physical, {hw.cores_logical or '?'} logical")
    lines.append(f"RAM: {_gb(hw.ram_available_mb)} available of {_gb(hw.ram_total_mb)}")
    for g in hw.gpus:
        cc = f", compute capability {g.compute_capability}" if g.compute_capability else ""
        lines.append(f"GPU {g.index}: {g.name}, VRAM {_gb(g.vram_free_mb)} free of "
                     f"{_gb(g.vram_total_mb)}{cc}")
    if not hw.gpus:
        lines.append("GPUs: none found")
    if hw.gpu_driver:
        lines.append(f"NVIDIA driver: {hw.gpu_driver}")
    lines.append(f"llama.cpp GPU offload: {'yes' if hw.gpu_offload else 'no'}")
    return lines


def _gb(mb: int) -> str:
    return f"{mb / 1024:.1f} GiB" if mb else "? GiB"


def _soft(call: Callable[[], Any], default: Any, what: str) -> Any:
    """call(), or default when it raises: a probe never fails the profile."""
    try:
        return call()
    except Exception as e:  # probes meet OSError, NVMLError, ctypes and psutil errors alike
        log.debug("%s probe failed: %s", what, e)
        return default


def _text(value: Any, default: str = UNKNOWN) -> str:
    """A probe's text, decoded and cut to what a peer accepts; default when empty."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str) or not value.strip():
        return default
    return value.strip()[:MAX_HW_TEXT]


def _bounded(value: Any, hi: int) -> int:
    """A count from a probe, 0 when missing or not an integer, clamped to [0, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, min(value, hi))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as e:
        log.debug("cannot read %s: %s", path, e)
        return ""


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as e:
        log.debug("cannot stat %s: %s", path, e)
        return False
