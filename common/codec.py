"""msgpack bodies: one map per frame, bounded in size, with field checks that name the field."""

from __future__ import annotations

import math
from typing import Any

import msgpack

from common.errors import BodyError
from common.frames import MAX_BODY_BYTES


def pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(frame: bytes, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Decode one frame into a map; BodyError for anything else."""
    if len(frame) > limit:
        raise BodyError(f"body of {len(frame)} bytes is over the {limit}-byte limit")
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise BodyError(f"body is not valid msgpack: {e}") from e
    if not isinstance(obj, dict):
        raise BodyError("body must be a msgpack map")
    return obj


def unpack_body(body: tuple[bytes, ...]) -> dict[str, Any]:
    if len(body) != 1:
        raise BodyError(f"expected one body frame, got {len(body)}")
    return unpack(body[0])


_MISSING = object()


def field(m: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
    """m[name] checked against kind; a default stands in for a missing or None value."""
    value = m.get(name)
    if value is None:
        if default is _MISSING:
            raise BodyError(f"field '{name}' is missing", name)
        return default
    # bool is an int in Python; never let True pass as a number
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BodyError(f"field '{name}' must be {_kind_name(kind)}, not a boolean", name)
    if not isinstance(value, kind):
        raise BodyError(f"field '{name}' must be {_kind_name(kind)}", name)
    return value


def number(m: dict[str, Any], key: str, lo: float, hi: float, default: Any = _MISSING,
           integer: bool = False, name: str | None = None) -> Any:
    """m[key] as a finite number in [lo, hi]; `name` is how errors spell the field."""
    name = name or key
    value = m.get(key)
    if value is None:
        if default is _MISSING:
            raise BodyError(f"field '{name}' is missing", name)
        return default
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BodyError(f"field '{name}' must be {_kind_name(kind)}", name)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BodyError(f"field '{name}' must be between {lo:g} and {hi:g}", name)
    return value if integer else float(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a map", bool: "a boolean", bytes: "bytes"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
