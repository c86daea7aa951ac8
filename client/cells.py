"""Peer values made fit for a terminal cell: checked, cleaned, cut; never raising on what came."""

from __future__ import annotations

import math
import unicodedata
from typing import Any

WIDTH = 80  # --peers never draws wider than this
TEXT_MAX = 4096  # characters of one piece of peer text kept for the screen
_JOINERS = {"\u200c", "\u200d"}  # format characters that emoji and scripts need


def is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31


def text(x: Any) -> str:
    """Peer text as one printable line: no control or format characters (terminal escapes,
    bidi overrides), whitespace runs as one space; "" for what is not text."""
    return clean(x, TEXT_MAX)


def clean(x: Any, limit: int) -> str:
    """`text` cut to `limit` characters, its end marked "..." where it was cut."""
    if not isinstance(x, str):
        return ""
    head = "".join(ch for ch in x[:limit + 64] if ch in _JOINERS
                   or not unicodedata.category(ch).startswith("C") or ch in "\t\n\r")
    line = " ".join(head.split())
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."


def count(x: Any) -> str:
    return str(x) if is_count(x) else "-"


def num(x: Any, digits: int = 2) -> str:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return f"{x:.{digits}f}" if ok else "-"


def clip(line: str) -> str:
    return line if len(line) <= WIDTH else line[:WIDTH - 3] + "..."
