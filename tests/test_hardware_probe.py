"""Hardware detection: one faked machine per platform, each yielding a whole profile, and
every probe failing softly (a raising NVML, psutil saying None, unreadable files)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from common.codec import pack, unpack
from common.hardware import MAX_HW_TEXT, Gpu, Hardware
from common.hardware_probe import (Sources, cpuinfo_chip, describe, detect, import_nvml,
                                   probe_platform)

pytestmark = pytest.mark.timeout(60)

MB = 1 << 20


class NVMLError(Exception):
    """What the fake NVML raises, as pynvml raises its NVMLError subclasses."""


@dataclass
class FakeDevice:
    name: str | bytes
    total_mb: int
    free_mb: int
    cc: tuple[int, int]


@dataclass
class FakeNvml:
    """A module-like stand-in for pynvml; `fail` names calls that raise ("name:1" for one
    device's call, "init" for all of NVML)."""
    devices: list[FakeDevice] = field(default_factory=list)
    driver: str | bytes = "550.54.15"
    fail: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def _call(self, name: str, index: int | None = None) -> None:
        self.calls.append(name)
        if name in self.fail or f"{name}:{index}" in self.fail:
            raise NVMLError(f"{name} failed")

    def nvmlInit(self) -> None:
        self._call("init")

    def nvmlShutdown(self) -> None:
        self._call("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        self._call("count")
        return len(self.devices)

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._call("driver")
        return self.driver

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._call("handle", index)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        self._call("name", handle)
        return self.devices[handle].name

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        self._call("memory", handle)
        d = self.devices[handle]
        return SimpleNamespace(total=d.total_mb * MB, free=d.free_mb * MB,
                               used=(d.total_mb - d.free_mb) * MB)

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        self._call("cc", handle)
        return self.devices[handle].cc

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        self._call("uuid", handle)
        return f"GPU-{handle}{handle}aa-{handle:04d}"


def fake(tmp: Path, *, env: dict[str, str] | None = None, files: dict[str, str] | None = None,
         system: str = "Linux", machine: str = "x86_64", sysctl: dict[str, str] | None = None,
         cores: tuple[int | None, int | None] = (8, 16), ram_mb: tuple[int, int] = (32768, 20480),
         nvml: Any = None, offload: bool = False) -> Sources:
    """Sources for a made-up machine: files are written under tmp, which stands for /."""
    for rel, text in (files or {}).items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    return Sources(
        env=env or {}, root=tmp, system=system, machine=machine,
        sysctl=lambda key: (sysctl or {}).get(key),
        cpu_count=lambda logical=True: cores[1] if logical else cores[0],
        virtual_memory=lambda: SimpleNamespace(total=ram_mb[0] * MB, available=ram_mb[1] * MB),
        nvml=nvml, gpu_offload=lambda: offload)


RYZEN = "processor\t: 0\nmodel name\t: AMD Ryzen 9 7950X 16-Core Processor\n"
XEON_NAME = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
XEON = f"processor\t: 0\nmodel name\t: {XEON_NAME}\nflags\t: avx2\n"
ARM64 = "processor\t: 0\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"
TERMUX_ENV = {"TERMUX_VERSION": "0.118.0", "PREFIX": "/data/data/com.termux/files/usr",
              "ANDROID_ROOT": "/system", "ANDROID_DATA": "/data"}
PIXEL_PROPS = ("# begin build properties\nro.product.model=Pixel 8\n"
               "ro.soc.manufacturer=Google\nro.soc.model=Tensor G3\n")

CASES = {
    "cuda box, two unequal GPUs": (
        dict(files={"proc/cpuinfo": RYZEN}, cores=(16, 32), ram_mb=(65536, 50000), offload=True,
             nvml=FakeNvml([FakeDevice(b"NVIDIA GeForce RTX 4090", 24564, 20480, (8, 9)),
                            FakeDevice("NVIDIA GeForce RTX 3060", 12288, 11900, (8, 6))])),
        Hardware(os="Linux", arch="x86_64", platform="linux",
                 chip="AMD Ryzen 9 7950X 16-Core Processor", cores_physical=16, cores_logical=32,
                 ram_total_mb=65536, ram_available_mb=50000,
                 gpus=(Gpu(0, "NVIDIA GeForce RTX 4090", 24564, 20480, "8.9"),
                       Gpu(1, "NVIDIA GeForce RTX 3060", 12288, 11900, "8.6")),
                 gpu_driver="550.54.15", gpu_offload=True)),
    "old GPU, Kepler K80": (
        dict(files={"proc/cpuinfo": XEON}, offload=True,
             nvml=FakeNvml([FakeDevice("Tesla K80", 11441, 11300, (3, 7))], driver=b"470.256.02")),
        Hardware(os="Linux", arch="x86_64", platform="linux", chip=XEON_NAME,
                 cores_physical=8, cores_logical=16, ram_total_mb=32768, ram_available_mb=20480,
                 gpus=(Gpu(0, "Tesla K80", 11441, 11300, "3.7"),), gpu_driver="470.256.02",
                 gpu_offload=True)),
    "Maxwell edge, cc 5.0": (
        dict(files={"proc/cpuinfo": XEON}, offload=True,
             nvml=FakeNvml([FakeDevice("NVIDIA GeForce GTX 750 Ti", 2048, 1900, (5, 0))])),
        Hardware(os="Linux", arch="x86_64", platform="linux", chip=XEON_NAME,
                 cores_physical=8, cores_logical=16, ram_total_mb=32768, ram_available_mb=20480,
                 gpus=(Gpu(0, "NVIDIA GeForce GTX 750 Ti", 2048, 1900, "5.0"),),
                 gpu_driver="550.54.15", gpu_offload=True)),
    "Mac, Apple M2 Pro": (
        dict(system="Darwin", machine="arm64", cores=(12, 12), ram_mb=(16384, 9000), offload=True,
             sysctl={"machdep.cpu.brand_string": "Apple M2 Pro", "hw.optional.arm64": "1"}),
        Hardware(os="Darwin", arch="arm64", platform="macos", apple_silicon=True,
                 chip="Apple M2 Pro", cores_physical=12, cores_logical=12, ram_total_mb=16384,
                 ram_available_mb=9000, unified_memory=True, gpu_offload=True)),
    "Mac, Python under Rosetta": (
        dict(system="Darwin", machine="x86_64", cores=(8, 8), ram_mb=(8192, 4000),
             sysctl={"machdep.cpu.brand_string": "Apple M1", "hw.optional.arm64": "1"}),
        Hardware(os="Darwin", arch="x86_64", platform="macos", apple_silicon=True, chip="Apple M1",
                 cores_physical=8, cores_logical=8, ram_total_mb=8192, ram_available_mb=4000,
                 unified_memory=True)),
    "Termux phone": (
        dict(env=TERMUX_ENV, machine="aarch64", cores=(None, 8), ram_mb=(7680, 3000),
             files={"system/build.prop": PIXEL_PROPS, "proc/cpuinfo": ARM64,
                    "proc/sys/kernel/osrelease": "5.15.110-android14-11-g0f5fa9c4d2b9\n"}),
        Hardware(os="Linux", arch="aarch64", platform="android", termux=True,
                 chip="Google Tensor G3", cores_physical=0, cores_logical=8, ram_total_mb=7680,
                 ram_available_mb=3000)),
    "Android shell, SoC only in /proc/cpuinfo": (
        dict(env={"ANDROID_ROOT": "/system"}, machine="aarch64", cores=(8, 8), ram_mb=(6144, 2000),
             files={"proc/cpuinfo": ARM64 + "Hardware\t: Qualcomm Technologies, Inc SM8150\n"}),
        Hardware(os="Linux", arch="aarch64", platform="android",
                 chip="Qualcomm Technologies, Inc SM8150", cores_physical=8, cores_logical=8,
                 ram_total_mb=6144, ram_available_mb=2000)),
    "CPU-only server, no NVML bindings": (
        dict(files={"proc/cpuinfo": XEON}, cores=(32, 64), ram_mb=(262144, 200000), nvml=None),
        Hardware(os="Linux", arch="x86_64", platform="linux", chip=XEON_NAME,
                 cores_physical=32, cores_logical=64, ram_total_mb=262144,
                 ram_available_mb=200000)),
    "Windows, nothing to read": (
        dict(system="Windows", machine="AMD64", cores=(4, 8), ram_mb=(16384, 8000)),
        Hardware(os="Windows", arch="AMD64", platform="windows", cores_physical=4, cores_logical=8,
                 ram_total_mb=16384, ram_available_mb=8000)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_faked_platform_yields_its_whole_profile(case, tmp_path):
    # Given a machine made of faked files, environment, psutil and NVML
    spec, expected = CASES[case]
    # When its hardware is detected
    hw = detect(fake(tmp_path, **spec))
    # Then the whole profile is what that machine is, and it survives the wire as a peer's input
    assert hw == expected
    assert Hardware.from_map(unpack(pack(hw.to_map()))) == hw


def test_nvml_is_shut_down_after_a_scan(tmp_path):
    nvml = FakeNvml([FakeDevice("NVIDIA A100", 40960, 40000, (8, 0))])
    detect(fake(tmp_path, nvml=nvml))
    assert nvml.calls[0] == "init" and nvml.calls[-1] == "shutdown"


@pytest.mark.parametrize("sign", [
    dict(env={"TERMUX_VERSION": "0.118.0"}),
    dict(env={"PREFIX": "/data/data/com.termux/files/usr"}),
    dict(env={"ANDROID_ROOT": "/system"}),
    dict(env={"ANDROID_DATA": "/data"}),
    dict(files={"system/build.prop": "ro.product.model=X\n"}),
    dict(files={"proc/sys/kernel/osrelease": "4.19.157-perf-Android\n"}),
])
def test_any_one_android_sign_makes_the_platform_android(sign, tmp_path):
    plat, termux = probe_platform(fake(tmp_path, **sign))
    assert plat == "android"
    assert termux == ("TERMUX_VERSION" in sign.get("env", {}) or "PREFIX" in sign.get("env", {}))


def test_a_plain_linux_box_is_not_android(tmp_path):
    files = {"proc/sys/kernel/osrelease": "6.1.0-18-amd64\n"}
    src = fake(tmp_path, env={"PREFIX": "/usr/local"}, files=files)
    assert probe_platform(src) == ("linux", False)


def test_cpuinfo_prefers_model_name_then_hardware_then_processor():
    text = "Processor\t: AArch64 rev 4\nHardware\t: Qualcomm SDM845\n"
    assert cpuinfo_chip(text) == "Qualcomm SDM845"
    assert cpuinfo_chip("Processor\t: ARMv7 Processor rev 3 (v7l)\nprocessor\t: 0\n") == \
        "ARMv7 Processor rev 3 (v7l)"
    assert cpuinfo_chip("processor\t: 0\nflags\t: fpu\n") is None


# --- soft failure: a probe that cannot tell leaves its field unknown, never raises ---

def test_nvml_whose_init_raises_gives_no_gpus_and_the_rest_of_the_profile(tmp_path):
    nvml = FakeNvml([FakeDevice("NVIDIA L4", 23034, 22000, (8, 9))], fail={"init"})
    hw = detect(fake(tmp_path, files={"proc/cpuinfo": XEON}, nvml=nvml))
    assert (hw.gpus, hw.gpu_driver) == ((), "")
    assert hw.chip.startswith("Intel(R) Xeon(R)") and hw.ram_total_mb == 32768


def test_a_device_whose_name_call_raises_keeps_the_rest_of_the_gpu_list(tmp_path):
    nvml = FakeNvml([FakeDevice("NVIDIA GeForce RTX 4090", 24564, 20480, (8, 9)),
                     FakeDevice("NVIDIA GeForce RTX 3060", 12288, 11900, (8, 6))], fail={"name:1"})
    hw = detect(fake(tmp_path, nvml=nvml))
    assert hw.gpus == (Gpu(0, "NVIDIA GeForce RTX 4090", 24564, 20480, "8.9"),
                       Gpu(1, "unknown", 12288, 11900, "8.6"))
    assert nvml.calls[-1] == "shutdown"


@pytest.mark.parametrize("fail, gpu", [
    ("memory:0", Gpu(0, "NVIDIA T4", 0, 0, "7.5")),
    ("cc:0", Gpu(0, "NVIDIA T4", 15360, 15000, "")),
    ("handle:0", Gpu(0)),
])
def test_each_failing_device_call_leaves_only_its_own_field_unknown(fail, gpu, tmp_path):
    nvml = FakeNvml([FakeDevice("NVIDIA T4", 15360, 15000, (7, 5))], fail={fail})
    assert detect(fake(tmp_path, nvml=nvml)).gpus == (gpu,)


def test_failing_count_driver_and_shutdown_calls_do_not_fail_the_profile(tmp_path):
    nvml = FakeNvml([FakeDevice("NVIDIA T4", 15360, 15000, (7, 5))], fail={"count", "shutdown"})
    assert detect(fake(tmp_path, nvml=nvml)).gpus == ()
    nvml = FakeNvml([FakeDevice("NVIDIA T4", 15360, 15000, (7, 5))], fail={"driver"})
    hw = detect(fake(tmp_path, nvml=nvml))
    assert (len(hw.gpus), hw.gpu_driver) == (1, "")


def test_psutil_returning_none_gives_zero_cores_and_ram(tmp_path):
    src = replace(fake(tmp_path), cpu_count=lambda logical=True: None, virtual_memory=lambda: None)
    hw = detect(src)
    assert (hw.cores_physical, hw.cores_logical) == (0, 0)
    assert (hw.ram_total_mb, hw.ram_available_mb) == (0, 0)


def boom(*args: Any, **kwargs: Any) -> Any:
    raise PermissionError("not allowed")


def test_every_source_raising_still_gives_a_profile(tmp_path):
    # Given a Mac whose sysctl, psutil, NVML and llama.cpp all raise
    src = replace(fake(tmp_path, system="Darwin", machine="x86_64"), sysctl=boom, cpu_count=boom,
                  virtual_memory=boom, gpu_offload=boom,
                  nvml=FakeNvml(fail={"init"}))
    # When it is detected, then each field is unknown and nothing raises
    assert detect(src) == Hardware(os="Darwin", arch="x86_64", platform="macos")


def test_unreadable_files_read_as_absent(tmp_path):
    # Given /proc/cpuinfo and osrelease that cannot be read (directories stand in for them)
    (tmp_path / "proc/cpuinfo").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").mkdir(parents=True)
    (tmp_path / "system/build.prop").mkdir(parents=True)
    src = fake(tmp_path, env={"TERMUX_VERSION": "1"}, machine="aarch64")
    # Then the chip is unknown and the Android signs that could be read still count
    hw = detect(src)
    assert (hw.platform, hw.termux, hw.chip) == ("android", True, "unknown")


def test_overlong_and_byte_names_are_cut_to_what_a_peer_accepts(tmp_path):
    nvml = FakeNvml([FakeDevice(b"NVIDIA \xff" + b"X" * 300, 1024, 512, (6, 1))])
    cpuinfo = "model name : " + "Y" * 400 + "\n"
    hw = detect(fake(tmp_path, files={"proc/cpuinfo": cpuinfo}, nvml=nvml))
    assert len(hw.chip) == MAX_HW_TEXT and len(hw.gpus[0].name) == MAX_HW_TEXT
    assert hw.gpus[0].name.startswith("NVIDIA \ufffd")
    assert Hardware.from_map(hw.to_map()) == hw


def test_detect_with_this_machines_real_sources():
    # Given no faked sources: this Linux machine as it is
    hw = detect()
    # Then it is a Linux box with cores and RAM, and the profile round-trips as peer input
    assert (hw.platform, hw.os) == ("linux", "Linux")
    assert hw.cores_logical > 0 and hw.ram_total_mb > 0 and hw.ram_available_mb > 0
    if _nvml_starts():
        assert all(g.vram_total_mb > 0 for g in hw.gpus)  # a developer's GPU box
    else:
        assert hw.gpus == () and hw.gpu_driver == ""
    assert Hardware.from_map(unpack(pack(hw.to_map()))) == hw


def _nvml_starts() -> bool:
    nvml = import_nvml()
    try:
        nvml.nvmlInit()
    except Exception:
        return False
    nvml.nvmlShutdown()
    return True


# --- describe: the lines --print-profile shows ---

def test_describe_a_cuda_box():
    _, hw = CASES["cuda box, two unequal GPUs"]
    assert describe(hw) == [
        "platform: linux, Linux x86_64",
        "chip: AMD Ryzen 9 7950X 16-Core Processor",
        "cores: 16 physical, 32 logical",
        "RAM: 48.8 GiB available of 64.0 GiB",
        "GPU 0: NVIDIA GeForce RTX 4090, VRAM 20.0 GiB free of 24.0 GiB, compute capability 8.9",
        "GPU 1: NVIDIA GeForce RTX 3060, VRAM 11.6 GiB free of 12.0 GiB, compute capability 8.6",
        "NVIDIA driver: 550.54.15",
        "llama.cpp GPU offload: yes",
    ]


def test_describe_a_phone_and_a_mac():
    _, phone = CASES["Termux phone"]
    assert describe(phone) == [
        "platform: android (Termux), Linux aarch64",
        "chip: Google Tensor G3",
        "cores: ? physical, 8 logical",
        "RAM: 2.9 GiB available of 7.5 GiB",
        "GPUs: none found",
        "llama.cpp GPU offload: no",
    ]
    _, mac = CASES["Mac, Apple M2 Pro"]
    assert "chip: Apple M2 Pro, Apple Silicon, unified memory" in describe(mac)
    assert describe(Hardware())[0] == "platform: unknown, unknown unknown"


THREE_GPUS = [FakeDevice("NVIDIA A100", 40960, 40000, (8, 0)),
              FakeDevice("NVIDIA RTX 4090", 24564, 20000, (8, 9)),
              FakeDevice("NVIDIA RTX 3060", 12288, 11000, (8, 6))]


@pytest.mark.parametrize("visible, names", [
    (None, ["NVIDIA A100", "NVIDIA RTX 4090", "NVIDIA RTX 3060"]),
    ("2,0", ["NVIDIA RTX 3060", "NVIDIA A100"]),      # CUDA's order and numbering
    ("1", ["NVIDIA RTX 4090"]),
    ("GPU-22aa", ["NVIDIA RTX 3060"]),                 # a UUID prefix
    ("GPU-11aa-0001,0", ["NVIDIA RTX 4090", "NVIDIA A100"]),
    ("", []), ("-1", []), ("NoDevFiles", []),           # the usual ways to hide every GPU
    ("0,7,1", ["NVIDIA A100"]),                         # CUDA stops at the first bad entry
    ("1,1", ["NVIDIA RTX 4090"]),
    ("GPU-", []),                                       # a prefix of every UUID names none
], ids=repr)
def test_cuda_visible_devices_leaves_only_the_gpus_cuda_will_show(tmp_path, visible, names):
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    hw = detect(fake(tmp_path, env=env, nvml=FakeNvml(THREE_GPUS), offload=True))
    assert [g.name for g in hw.gpus] == names
    assert [g.index for g in hw.gpus] == list(range(len(names)))


@pytest.mark.parametrize("visible, names", [("GPU-22aa", []), ("2", ["NVIDIA RTX 3060"])])
def test_a_failing_uuid_call_only_stops_uuid_matching(tmp_path, visible, names):
    nvml = FakeNvml(THREE_GPUS, fail={"uuid:2"})
    hw = detect(fake(tmp_path, env={"CUDA_VISIBLE_DEVICES": visible}, nvml=nvml))
    assert [g.name for g in hw.gpus] == names
