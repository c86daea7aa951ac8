"""What the worker's flags asked for, checked: "auto" or a value in range, one sentence if not.

worker/policy.py turns it into a Plan; `parse_auto_int` is the click callbacks' parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError
from common.profile import MAX_CTX

AUTO = "auto"
BACKENDS = (AUTO, "llama.cpp", "mlx")
MAX_REQUESTED_INSTANCES = 64


@dataclass(frozen=True, slots=True)
class Requested:
    """What the flags asked for; "auto" (or None) leaves the choice to the policy."""

    backend: str = AUTO
    gpu_layers: int | str | None = AUTO      # -1: all
    instances: int | str | None = AUTO
    threads: int | str | None = AUTO
    seed_variation: bool | None = None
    n_ctx: int | str | None = AUTO           # 0: the model's trained context

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, not "
                              f"{self.backend!r}")
        _check("--gpu-layers", self.gpu_layers, -1)
        _check("--instances", self.instances, 1, MAX_REQUESTED_INSTANCES)
        _check("--threads", self.threads, 1)
        _check("--n-ctx", self.n_ctx, 0, MAX_CTX)
        if self.seed_variation not in (True, False, None):
            raise ConfigError("--seed-variation must be on, off or automatic")


def parse_auto_int(text: str, flag: str, lo: int, hi: int | None = None) -> int | str:
    """A flag's "auto" or a whole number in [lo, hi]; ConfigError in one sentence otherwise."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{flag} must be auto or a whole number, not {text!r}") from None
    _check(flag, value, lo, hi)
    return value


def _check(flag: str, value: Any, lo: int, hi: int | None = None) -> None:
    if value is None or value == AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo \
            or (hi is not None and value > hi):
        span = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"{flag} must be auto or a whole number {span}, not {value!r}")
