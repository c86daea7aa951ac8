"""`swarm-ask --history`: the broker's recent jobs as a table, one line a job, newest first.

The records come from the broker (broker/history.py); nothing in them is trusted to be
there or to have its type: a missing or odd value shows as `?`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import click

from broker.history import MAX_LIMIT
from client.cells import text

COLUMNS = (("time", 19), ("job", 12), ("strategy", 10), ("winner", 16), ("ok", 7),
           ("total s", 8))


class JobCount(click.ParamType):
    """--history's optional N: a count of jobs; a question after --history is caught here."""

    name = "N"

    def convert(self, value: Any, param, ctx) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            try:
                n = int(str(value).strip())
            except ValueError:
                self.fail(f"'{value}' is not a number of jobs; --history takes no question",
                          param, ctx)
        if not 1 <= n <= MAX_LIMIT:
            self.fail(f"{n} jobs is not between 1 and {MAX_LIMIT}", param, ctx)
        return n


def history_lines(jobs: list[dict[str, Any]]) -> list[str]:
    if not jobs:
        return ["no jobs yet"]
    lines = [_row(name for name, _ in COLUMNS)]
    for job in jobs:
        lines.append(_row((_when(job.get("at")), _text(job.get("job")),
                           _text(job.get("strategy")), _winner(job), _ok(job.get("candidates")),
                           _seconds(job.get("total_s")))))
    return lines


def _row(cells) -> str:
    out = []
    for (name, width), cell in zip(COLUMNS, cells):
        cell = cell if len(cell) <= width else cell[:width - 1] + "…"
        out.append(cell.rjust(width) if name in ("ok", "total s") else cell.ljust(width))
    return "  ".join(out).rstrip()


def _when(at: Any) -> str:
    if not _finite(at) or at < 0:
        return "?"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    except (OverflowError, OSError, ValueError):
        return "?"


def _winner(job: dict[str, Any]) -> str:
    winner = job.get("winner")
    if isinstance(winner, dict):
        return _text(winner.get("peer"))
    outcome = _text(job.get("outcome"))
    return f"({outcome})" if outcome != "?" else "-"


def _ok(cands: Any) -> str:
    if not isinstance(cands, list):
        return "?"
    ok = sum(1 for c in cands if isinstance(c, dict) and c.get("ok") is True)
    return f"{ok}/{len(cands)}"


def _seconds(x: Any) -> str:
    return f"{x:.2f}" if _finite(x) else "?"


def _text(x: Any) -> str:
    return text(x) or "?"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
