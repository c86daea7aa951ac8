"""Per-peer settings from the broker's config file, by node name. Pure.

    [peers."gpu-box"]
    timeout_s = 90      # like --peer-timeout gpu-box=90 (the flag wins over the file)
    weight = 2.0        # its candidates count twice in majority-style votes
    disabled = true     # its READY is answered with DISCONNECT

A peer not named weighs 1. Weights count in majority, auto (when it counts a majority) and
confidence (times the confidence weight); similarity, weighted and first ignore them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError

MAX_WEIGHT = 1e6  # a weight beyond this is a typo, not a preference
MAX_TIMEOUT_S = 86400.0


@dataclass(frozen=True, slots=True)
class PeerSettings:
    timeout_s: float | None = None  # its candidates' timeout (an override: beats hint, learned)
    weight: float = 1.0
    disabled: bool = False


def _number(where: str, value: Any, lo: float, hi: float, open_lo: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"key '{where}': expected a number, not {value!r}")
    low_ok = value > lo if open_lo else value >= lo
    if not math.isfinite(value) or not low_ok or value > hi:
        bound = f"above {lo:g}" if open_lo else f"at least {lo:g}"
        raise ConfigError(f"key '{where}': {value} is not {bound} and at most {hi:g}")
    return float(value)


def peer_settings(name: str, table: Any) -> PeerSettings:
    where = f"peers.{name}"
    if not name.strip():
        raise ConfigError(f"key '{where}': a peer needs a name")
    if not isinstance(table, dict):
        raise ConfigError(f"key '{where}': expected a table of timeout_s, weight, disabled")
    for key in table:
        if key not in PeerSettings.__slots__:
            raise ConfigError(f"key '{where}.{key}': unknown (a peer takes timeout_s, weight "
                              "and disabled)")
    timeout = table.get("timeout_s")
    disabled = table.get("disabled", False)
    if not isinstance(disabled, bool):
        raise ConfigError(f"key '{where}.disabled': expected true or false, not {disabled!r}")
    return PeerSettings(
        None if timeout is None else _number(f"{where}.timeout_s", timeout, 0.0, MAX_TIMEOUT_S,
                                             True),
        _number(f"{where}.weight", table.get("weight", 1.0), 0.0, MAX_WEIGHT, False), disabled)


def parse_peers(table: Any) -> dict[str, PeerSettings]:
    """The [peers] table of a config file; ConfigError naming the bad key."""
    if not isinstance(table, dict):
        raise ConfigError("key 'peers': expected a table of peers by name ([peers.\"NAME\"])")
    return {name: peer_settings(name, settings) for name, settings in table.items()}


def timeouts(peers: Mapping[str, PeerSettings]) -> dict[str, float]:
    """The peers' timeouts from the file (flags are laid over them)."""
    return {name: p.timeout_s for name, p in peers.items() if p.timeout_s is not None}


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each peer's candidate counts in a majority-style vote."""

    by_peer: Mapping[str, float]

    @classmethod
    def of(cls, peers: Mapping[str, PeerSettings]) -> "Weights":
        return cls({name: p.weight for name, p in peers.items() if p.weight != 1.0})

    def __call__(self, peer: str | None) -> float:
        return self.by_peer.get(peer or "", 1.0)

    @property
    def top(self) -> float:
        """The most any candidate can count: what an open one (which may yet be retried on
        another peer) is assumed to add."""
        return max(1.0, *self.by_peer.values()) if self.by_peer else 1.0


EVEN = Weights({})
