"""Logging set-up, called only by the CLIs, and the fields that ride on a log line.

A line is one event: `HH:MM:SS LEVEL logger: message key=value ...`, or with `fmt="json"`
one JSON object per line (`ts`, `level`, `logger`, `msg` and the fields) for shipping.
Fields go in `extra=kv(job=..., peer=...)`, so both formats carry them as data.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

TEXT, JSON = "text", "json"
FORMATS = (TEXT, JSON)
_FIELDS = "swarm_fields"


def kv(**fields: Any) -> dict[str, dict[str, Any]]:
    """`log.info("candidate failed", extra=kv(job=j, peer=p))`: fields for one line
    (None values are left out)."""
    return {_FIELDS: {k: v for k, v in fields.items() if v is not None}}


def _value(v: Any) -> str:
    text = str(v)
    if not text or not text.isprintable() or any(c in text for c in ' "='):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, _FIELDS, None)
        if fields:
            line += " " + " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage()}
        for k, v in (getattr(record, _FIELDS, None) or {}).items():
            out.setdefault(k, v if isinstance(v, (int, float, bool, str)) else str(v))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(verbose: int = 0, quiet: bool = False, fmt: str = TEXT) -> None:
    """Log to stderr in `fmt`; Python's own warnings too, so a JSON log stays JSON. Where
    logging is set up already (a test harness running a CLI in-process) nothing changes."""
    if logging.getLogger().handlers:
        return
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == JSON else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(True)
