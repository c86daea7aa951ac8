"""The hardware profile: what a worker's machine is, as the probes found it.

Frozen values only; the probes that fill them live in common/hardware_probe.py. The profile
travels to the broker inside the READY profile frame and in the mDNS TXT record, so
`from_map` checks every value as it would any peer's input. Unknown is spelt "unknown"
for text and 0 for counts and sizes: a probe that fails never fails the profile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from common.codec import number
from common.errors import BodyError

UNKNOWN = "unknown"
PLATFORMS = ("linux", "macos", "windows", "android", UNKNOWN)
MAX_GPUS = 16
MAX_MB = 1 << 40          # a megabyte count no machine reaches (an exabyte)
MAX_CORES = 1 << 16
MAX_HW_TEXT = 128         # characters of a chip, GPU or driver name


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    name: str = UNKNOWN
    vram_total_mb: int = 0
    vram_free_mb: int = 0
    compute_capability: str = ""     # "8.9"; "" when unknown or not CUDA
    vendor: str = "nvidia"

    @property
    def capability(self) -> float | None:
        """The compute capability as a number (8.9), None when unknown."""
        try:
            return float(self.compute_capability)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Hardware:
    os: str = UNKNOWN                # platform.system(): Linux, Darwin, Windows
    arch: str = UNKNOWN              # x86_64, arm64, aarch64
    platform: str = UNKNOWN          # one of PLATFORMS; android covers Termux
    termux: bool = False
    apple_silicon: bool = False
    chip: str = UNKNOWN              # "Apple M2 Pro", or the CPU's model name
    cores_physical: int = 0
    cores_logical: int = 0
    ram_total_mb: int = 0
    ram_available_mb: int = 0
    unified_memory: bool = False     # GPU and CPU share RAM (Apple Silicon)
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)
    gpu_driver: str = ""             # the NVIDIA driver version, "" without one
    gpu_offload: bool = False        # this llama.cpp build can offload layers to a GPU

    @property
    def vram_free_mb(self) -> int:
        return sum(g.vram_free_mb for g in self.gpus)

    def to_map(self) -> dict[str, Any]:
        m = asdict(self)
        m["gpus"] = [asdict(g) for g in self.gpus]
        return m

    @classmethod
    def from_map(cls, m: Any) -> "Hardware":
        """A peer's hardware map, every value checked; BodyError names the bad field."""
        if not isinstance(m, dict):
            raise BodyError("profile field 'hardware' must be a map", "hardware")
        gpus = m.get("gpus") or []
        if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
            raise BodyError(f"hardware field 'gpus' must be a list of at most {MAX_GPUS}", "gpus")
        platform = _text(m, "platform")
        if platform not in PLATFORMS:
            raise BodyError(f"hardware field 'platform' must be one of {', '.join(PLATFORMS)}",
                            "platform")
        return cls(
            os=_text(m, "os"), arch=_text(m, "arch"), platform=platform,
            termux=_flag(m, "termux"), apple_silicon=_flag(m, "apple_silicon"),
            chip=_text(m, "chip"),
            cores_physical=_count(m, "cores_physical", MAX_CORES),
            cores_logical=_count(m, "cores_logical", MAX_CORES),
            ram_total_mb=_count(m, "ram_total_mb", MAX_MB),
            ram_available_mb=_count(m, "ram_available_mb", MAX_MB),
            unified_memory=_flag(m, "unified_memory"),
            gpus=tuple(_gpu(g) for g in gpus),
            gpu_driver=_text(m, "gpu_driver", ""), gpu_offload=_flag(m, "gpu_offload"),
        )


def _gpu(m: Any) -> Gpu:
    if not isinstance(m, dict):
        raise BodyError("each of hardware's 'gpus' must be a map", "gpus")
    return Gpu(index=_count(m, "index", MAX_GPUS), name=_text(m, "name"),
               vram_total_mb=_count(m, "vram_total_mb", MAX_MB),
               vram_free_mb=_count(m, "vram_free_mb", MAX_MB),
               compute_capability=_text(m, "compute_capability", ""),
               vendor=_text(m, "vendor", "nvidia"))


def _text(m: dict[str, Any], name: str, default: str = UNKNOWN) -> str:
    value = m.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > MAX_HW_TEXT:
        raise BodyError(f"hardware field '{name}' must be a string of at most {MAX_HW_TEXT} "
                        "characters", name)
    return value


def _flag(m: dict[str, Any], name: str) -> bool:
    value = m.get(name, False)
    if not isinstance(value, bool):
        raise BodyError(f"hardware field '{name}' must be a boolean", name)
    return value


def _count(m: dict[str, Any], name: str, hi: int) -> int:
    return number(m, name, 0, hi, default=0, integer=True, name=f"hardware.{name}")
