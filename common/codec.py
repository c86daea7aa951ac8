"""msgpack bodies: one map per frame, bounded in size, with field checks that name the field.

A peer's frame is never trusted to say how much to build. Before msgpack builds anything,
`check_shape` walks the frame's headers: every claimed length must fit in the frame, ext
types (which Swarm never sends) are refused, containers nest at most MAX_DEPTH deep, and a
body holds at most MAX_ITEMS objects. That bounds what one body costs in memory to a few
times its size: without it a 16 MiB frame of empty arrays builds ~1 GiB of Python lists.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from common.errors import BodyError
from common.frames import MAX_BODY_BYTES

MAX_DEPTH = 64        # containers within containers; a body nests a handful, a tool schema ~10
MAX_ITEMS = 1 << 16   # objects (keys and values) in one body; a 1000-turn chat is ~5000


def pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(frame: bytes, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Decode one frame into a map; BodyError for anything else."""
    if len(frame) > limit:
        raise BodyError(f"body of {len(frame)} bytes is over the {limit}-byte limit")
    check_shape(frame)
    try:
        # unpackb's buffer limit is the frame itself; these bound what any header may claim
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_str_len=limit,
                              max_bin_len=limit, max_ext_len=0, max_array_len=MAX_ITEMS,
                              max_map_len=MAX_ITEMS)
    except Exception as e:  # msgpack raises several unrelated types
        raise BodyError(f"body is not valid msgpack: {e}") from e
    if not isinstance(obj, dict):
        raise BodyError("body must be a msgpack map")
    return obj


def _header_table() -> list[tuple[int, int, int, int]]:
    """For each first byte: (kind, count or payload size, width of a length field, per)."""
    table = [(_BAD, 0, 0, 0)] * 256
    for b in range(0x00, 0x80):
        table[b] = (_SCALAR, 0, 0, 0)                        # positive fixint
    for b in range(0xe0, 0x100):
        table[b] = (_SCALAR, 0, 0, 0)                        # negative fixint
    for b in range(0x80, 0x90):
        table[b] = (_CONTAINER, b - 0x80, 0, 2)              # fixmap
    for b in range(0x90, 0xa0):
        table[b] = (_CONTAINER, b - 0x90, 0, 1)              # fixarray
    for b in range(0xa0, 0xc0):
        table[b] = (_SCALAR, b - 0xa0, 0, 0)                 # fixstr
    for b in (0xc0, 0xc2, 0xc3):
        table[b] = (_SCALAR, 0, 0, 0)                        # nil, false, true
    for b, width in ((0xc4, 1), (0xc5, 2), (0xc6, 4), (0xd9, 1), (0xda, 2), (0xdb, 4)):
        table[b] = (_SCALAR, 0, width, 0)                    # bin 8/16/32, str 8/16/32
    for b, size in ((0xca, 4), (0xcb, 8), (0xcc, 1), (0xcd, 2), (0xce, 4), (0xcf, 8),
                    (0xd0, 1), (0xd1, 2), (0xd2, 4), (0xd3, 8)):
        table[b] = (_SCALAR, size, 0, 0)                     # float, uint, int
    for b, width, per in ((0xdc, 2, 1), (0xdd, 4, 1), (0xde, 2, 2), (0xdf, 4, 2)):
        table[b] = (_CONTAINER, 0, width, per)               # array 16/32, map 16/32
    return table                                             # 0xc1 and ext: _BAD


_BAD, _SCALAR, _CONTAINER = 0, 1, 2
_HEADERS = _header_table()


def check_shape(frame: bytes, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> None:
    """Walk a msgpack frame's headers without building a thing; BodyError if it claims more
    than it holds, nests deeper than max_depth or holds more than max_items objects."""
    owed = [1]  # objects still owed by the top level and by each open container
    pos = items = 0
    end = len(frame)
    while owed:
        if not owed[-1]:
            owed.pop()
            continue
        owed[-1] -= 1
        items += 1
        if items > max_items:
            raise BodyError(f"body holds more than {max_items} objects")
        if pos >= end:
            raise BodyError("body is not valid msgpack: it ends early")
        kind, size, width, per = _HEADERS[frame[pos]]
        pos += 1
        if kind == _BAD:
            raise BodyError(f"body is not valid msgpack: type byte 0x{frame[pos - 1]:02x} "
                            "is not used in Swarm bodies")
        if width:
            size = int.from_bytes(frame[pos:pos + width], "big")
            pos += width
        if kind == _CONTAINER:
            if len(owed) > max_depth:
                raise BodyError(f"body nests deeper than {max_depth} levels")
            owed.append(size * per)
        else:
            pos += size
        if pos > end:
            raise BodyError("body is not valid msgpack: a length runs past its end")


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
