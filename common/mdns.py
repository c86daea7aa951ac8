"""mDNS names and TXT records, pure: a stranger's record is tested here without a network.

A worker's TXT carries its profile in compact keys, one `key=value` string each, every one
at most 255 bytes (RFC 6763 6.1): long names are clipped and each GPU has its own key, so
a sixteen-GPU box never overflows a string. What comes back from the LAN is peer input:
a malformed value is defaulted, a record without an id or a name is skipped, both with a
debug log, and nothing here raises on it. Keys are spelt once, in `K`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from common import __version__
from common.curve import is_key
from common.errors import ConfigError
from common.hardware import (MAX_CORES, MAX_GPUS, MAX_HW_TEXT, MAX_MB, PLATFORMS, UNKNOWN, Gpu,
                             Hardware)
from common.profile import MAX_COUNT, WorkerProfile

log = logging.getLogger(__name__)

BROKER_TYPE = "_swarm-broker._tcp.local."
WORKER_TYPE = "_swarm-worker._tcp.local."
TXT_VERSION = "1"
DEFAULT_SWARM = "default"
TXT_MAX_BYTES = 255    # one key=value string
LABEL_MAX_BYTES = 63   # one DNS label: an instance or host name
GPU_NAME_BYTES = 64    # a GPU's name in its gpuN value; keeps the whole record small
TEXT_BYTES = 128       # any other text value
WORKER_PORT = 9        # a worker listens nowhere; SRV needs a port (9: discard)

_SWARM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_ID = re.compile(r"^[A-Za-z0-9_.~-]{1,64}$")
_COUNT = re.compile(r"^[0-9]{1,15}$")
_CC = re.compile(r"^[0-9]{1,2}\.[0-9]{1,2}$")
_GPU_KEY = re.compile(r"^gpu([0-9]{1,2})$")


class K:
    """TXT keys of a worker (W) and a broker (B) record."""
    TXTVERS = "txtvers"
    ID, NAME, SWARM, HOST, VERSION = "id", "name", "swarm", "host", "ver"
    BACKEND, MODEL, SLOTS, GPU_LAYERS, SEED_VARIATION = "be", "model", "slots", "gl", "sv"
    PLATFORM, OS, ARCH, CHIP, CORES, RAM = "plat", "os", "arch", "chip", "cores", "ram"
    DRIVER, OFFLOAD, TERMUX, APPLE, UNIFIED = "drv", "off", "tmx", "asi", "uma"
    GPU = "gpu"       # gpu0 .. gpu15: name|total MB|free MB|compute capability[|vendor]
    PORT = "port"     # broker: the MDP endpoint's port
    KEY = "key"       # broker under --secure: its CURVE public key (Z85)


@dataclass(frozen=True, slots=True)
class WorkerAdvert:
    """A worker as its mDNS record shows it."""
    profile: WorkerProfile
    addresses: tuple[str, ...] = ()
    seen_at: float = 0.0


@dataclass(frozen=True, slots=True)
class BrokerAdvert:
    """A broker as its mDNS record shows it."""
    swarm: str
    port: int
    version: str = UNKNOWN
    addresses: tuple[str, ...] = field(default_factory=tuple)
    key: str = ""  # its CURVE public key (Z85), "" when it is not --secure


def check_swarm(name: str) -> str:
    """A swarm name: 1 to 32 letters, digits, '-' or '_'; ConfigError says so otherwise."""
    if not isinstance(name, str) or not _SWARM.match(name):
        raise ConfigError(f"'{name}' is not a swarm name: use 1 to 32 letters, digits, '-' "
                          "or '_', starting with a letter or digit")
    return name


# -- names -------------------------------------------------------------------------------
def clip(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    return text.encode()[:max_bytes].decode(errors="ignore")


def _label(text: str, max_bytes: int = LABEL_MAX_BYTES) -> str:
    return clip(" ".join(text.replace(".", "-").split()), max_bytes)


def host_label(text: str) -> str:
    """A DNS host label (letters, digits, '-') made from any text."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:LABEL_MAX_BYTES] or "swarm"


def broker_instance(swarm: str, host: str, port: int) -> str:
    suffix = f"-{port}"
    return f"{_label(f'{swarm}-{host}', LABEL_MAX_BYTES - len(suffix))}{suffix}.{BROKER_TYPE}"


def worker_instance(profile: WorkerProfile) -> str:
    suffix = f"-{_label(profile.swarm, 32)}-{_label(profile.node_id, 16)}"
    name = _label(profile.name, LABEL_MAX_BYTES - len(suffix.encode()))
    return f"{name}{suffix}.{WORKER_TYPE}"


def server_name(instance: str) -> str:
    """The SRV target for an instance: its own host name, so that hosts sharing a host name
    (containers, network namespaces) never mix their address records."""
    return f"{host_label(instance.split('.', 1)[0])}.local."


# -- encoding ----------------------------------------------------------------------------
def _put(txt: dict[str, str], key: str, value: object, max_bytes: int = TEXT_BYTES) -> None:
    text = value if isinstance(value, str) else str(value)
    txt[key] = clip(text, min(max_bytes, TXT_MAX_BYTES - len(key) - 1))


def worker_txt(profile: WorkerProfile) -> dict[str, str]:
    """The TXT properties of a worker node (its slot 0's profile)."""
    p, hw = profile, profile.hardware
    txt: dict[str, str] = {K.TXTVERS: TXT_VERSION}
    for key, value in ((K.ID, p.node_id), (K.NAME, p.name), (K.SWARM, p.swarm), (K.HOST, p.host),
                       (K.VERSION, p.version), (K.BACKEND, p.backend), (K.MODEL, p.model),
                       (K.SLOTS, p.slots), (K.GPU_LAYERS, p.gpu_layers),
                       (K.SEED_VARIATION, int(p.seed_variation)), (K.PLATFORM, hw.platform),
                       (K.OS, hw.os), (K.ARCH, hw.arch), (K.CHIP, hw.chip),
                       (K.CORES, f"{hw.cores_physical}/{hw.cores_logical}"),
                       (K.RAM, f"{hw.ram_total_mb}/{hw.ram_available_mb}"),
                       (K.DRIVER, hw.gpu_driver), (K.OFFLOAD, int(hw.gpu_offload)),
                       (K.TERMUX, int(hw.termux)), (K.APPLE, int(hw.apple_silicon)),
                       (K.UNIFIED, int(hw.unified_memory))):
        _put(txt, key, value)
    for i, gpu in enumerate(hw.gpus[:MAX_GPUS]):
        name = clip(" ".join(gpu.name.replace("|", "/").split()), GPU_NAME_BYTES)
        fields = [name, str(gpu.vram_total_mb), str(gpu.vram_free_mb), gpu.compute_capability]
        if gpu.vendor != "nvidia":
            fields.append(clip(gpu.vendor.replace("|", "/"), 32))
        _put(txt, f"{K.GPU}{i}", "|".join(fields), TXT_MAX_BYTES)
    return txt


def broker_txt(swarm: str, port: int, version: str = __version__, key: str = "") -> dict[str, str]:
    txt = {K.TXTVERS: TXT_VERSION}
    for name, value in ((K.SWARM, swarm), (K.VERSION, version), (K.PORT, port)):
        _put(txt, name, value)
    if key:
        txt[K.KEY] = key
    return txt


# -- decoding: every value is a stranger's ------------------------------------------------
class _Txt:
    """A record's properties as text, with getters that default what they cannot use."""

    def __init__(self, props: Mapping, who: str):
        self.who, self.values = who, {}
        for key, value in props.items() if isinstance(props, Mapping) else ():
            k, v = _decoded(key), _decoded(value)
            if k is None or v is None:
                log.debug("mDNS record %s: skipped an undecodable TXT entry", who)
            else:
                self.values.setdefault(k.lower(), v)

    def bad(self, key: str, why: str) -> None:
        log.debug("mDNS record %s: TXT %s %s; using the default", self.who, key, why)

    def text(self, key: str, default: str = UNKNOWN, max_chars: int = MAX_HW_TEXT) -> str:
        value = self.values.get(key)
        if value is None:
            return default
        value = " ".join(value.split())
        return value[:max_chars] if value else default

    def count(self, key: str, hi: int, default: int = 0) -> int:
        return _count(self, key, self.values.get(key), hi, default)

    def pair(self, key: str, hi: int) -> tuple[int, int]:
        a, sep, b = (self.values.get(key) or "").partition("/")
        if not sep:
            return 0, 0
        return _count(self, key, a, hi, 0), _count(self, key, b, hi, 0)

    def flag(self, key: str) -> bool:
        return self.values.get(key) == "1"


def _decoded(x: object) -> str | None:
    if isinstance(x, str):
        return x
    if isinstance(x, (bytes, bytearray)):
        try:
            return bytes(x).decode()
        except UnicodeDecodeError:
            return None
    return None


def _count(txt: _Txt, key: str, value: str | None, hi: int, default: int) -> int:
    if value is None:
        return default
    if not _COUNT.match(value) or int(value) > hi:
        txt.bad(key, f"is not a count from 0 to {hi}")
        return default
    return int(value)


def worker_from_txt(props: Mapping, addresses: Iterable[str] = (), seen_at: float = 0.0,
                    who: str = "?") -> WorkerAdvert | None:
    """A worker's advert from its TXT properties; None (logged) when it has no usable id or
    name. Any other bad value falls back to its default."""
    txt = _Txt(props, who)
    node_id, name = txt.values.get(K.ID, ""), txt.text(K.NAME, "", 256)
    if not _ID.match(node_id) or not name:
        log.debug("mDNS record %s: no usable id or name; skipped", who)
        return None
    swarm = txt.values.get(K.SWARM, DEFAULT_SWARM)
    if not _SWARM.match(swarm):
        log.debug("mDNS record %s: swarm %r is not a swarm name; skipped", who, swarm)
        return None
    gl = txt.values.get(K.GPU_LAYERS, "0")
    profile = WorkerProfile(
        name=name, node_id=node_id, host=txt.text(K.HOST, "", 256), swarm=swarm,
        version=txt.text(K.VERSION, UNKNOWN, 64), backend=txt.text(K.BACKEND, UNKNOWN, 64),
        model=txt.text(K.MODEL, "", 256), slots=txt.count(K.SLOTS, MAX_COUNT, 1),
        gpu_layers=-1 if gl == "-1" else txt.count(K.GPU_LAYERS, MAX_COUNT),
        seed_variation=txt.flag(K.SEED_VARIATION), hardware=_hardware(txt))
    return WorkerAdvert(profile, _addresses(addresses), seen_at)


def _hardware(txt: _Txt) -> Hardware:
    platform = txt.text(K.PLATFORM)
    phys, logical = txt.pair(K.CORES, MAX_CORES)
    total, avail = txt.pair(K.RAM, MAX_MB)
    return Hardware(
        os=txt.text(K.OS), arch=txt.text(K.ARCH),
        platform=platform if platform in PLATFORMS else UNKNOWN,
        termux=txt.flag(K.TERMUX), apple_silicon=txt.flag(K.APPLE), chip=txt.text(K.CHIP),
        cores_physical=phys, cores_logical=logical, ram_total_mb=total, ram_available_mb=avail,
        unified_memory=txt.flag(K.UNIFIED), gpus=_gpus(txt), gpu_driver=txt.text(K.DRIVER, ""),
        gpu_offload=txt.flag(K.OFFLOAD))


def _gpus(txt: _Txt) -> tuple[Gpu, ...]:
    found = {}
    for key, value in txt.values.items():
        m = _GPU_KEY.match(key)
        if not m or int(m.group(1)) >= MAX_GPUS:
            continue
        parts = value.split("|")
        if len(parts) not in (4, 5) or not all(_COUNT.match(x) for x in parts[1:3]):
            txt.bad(key, "is not name|total|free|capability")
            continue
        index = int(m.group(1))
        cc = parts[3] if _CC.match(parts[3]) else ""
        vendor = " ".join(parts[4].split())[:32] if len(parts) == 5 else "nvidia"
        found[index] = Gpu(index, " ".join(parts[0].split())[:MAX_HW_TEXT] or UNKNOWN,
                           min(int(parts[1]), MAX_MB), min(int(parts[2]), MAX_MB), cc,
                           vendor or UNKNOWN)
    return tuple(found[i] for i in sorted(found))


def broker_from_txt(props: Mapping, srv_port: int | None, addresses: Iterable[str] = (),
                    who: str = "?") -> BrokerAdvert | None:
    """A broker's advert; None (logged) when it names no swarm or no usable port."""
    txt = _Txt(props, who)
    swarm = txt.values.get(K.SWARM, "")
    port = txt.count(K.PORT, 65535, srv_port if isinstance(srv_port, int) else 0)
    if not _SWARM.match(swarm) or not 0 < port <= 65535:
        log.debug("mDNS record %s: no usable swarm or port; skipped", who)
        return None
    key = txt.values.get(K.KEY, "")
    if key and not is_key(key):
        txt.bad(K.KEY, "is not a CURVE key")
        key = ""
    return BrokerAdvert(swarm, port, txt.text(K.VERSION, UNKNOWN, 64), _addresses(addresses), key)


def _addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    out = []
    for a in addresses:
        try:
            out.append(str(ipaddress.ip_address(a.split("%", 1)[0] if isinstance(a, str) else a)))
        except ValueError:
            continue
    return tuple(dict.fromkeys(out))
