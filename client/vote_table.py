"""The explained vote `swarm-ask` shows after the answer: one row a candidate, then why.

Every value comes from the broker's FINAL, so every value is peer data: a cell is drawn only
from a value of the right type, cut short, with control and format characters (terminal
escapes, bidi overrides) taken out.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

from rich.cells import cell_len, set_cell_size

from client.render import clean
from common.bodies import MAX_CANDIDATES

WIDTH = 80          # the table never draws wider than this
CELL = 40           # characters a cell keeps before the table fits it to its column
ANSWER_TEXT = 22    # characters of a candidate's text shown where no answer was extracted
MAX_ROWS = MAX_CANDIDATES  # a longer list is cut, with a line saying how many were left out
COLUMNS = ("", "cand", "peer", "answer", "group", "score", "agreed", "time", "state")
_MAX_WIDTHS = {"": 1, "peer": 14, "answer": 24, "agreed": 10, "state": 30}
_REASON_LINES = 3    # lines the vote's reason may wrap over
_GAP = 2             # spaces between columns
_MIN_WIDTH = 5       # the narrowest a column that gives way gets


def _count(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31 else None


def _number(x: Any) -> float | None:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def _answer(c: dict[str, Any]) -> str:
    """The extracted answer; else the tool it calls; else the start of its text, quoted."""
    if clean(c.get("answer"), CELL):
        return clean(c["answer"], CELL)
    calls = c.get("tool_calls")
    first = calls[0] if isinstance(calls, list) and calls else None
    if isinstance(first, dict) and clean(first.get("name"), CELL):
        return f"{clean(first['name'], CELL)}({clean(first.get('arguments'), ANSWER_TEXT)})"
    text = clean(c.get("text"), ANSWER_TEXT)
    return f'"{text}"' if text else "-"


def _score(c: dict[str, Any], votes: dict[str, Any]) -> str:
    score = _number(c.get("score"))
    if score is None and _count(c.get("cand")) is not None:
        score = _number(votes.get(str(c["cand"])))
    return "-" if score is None else f"{score:.2f}"


def _agreed(x: Any) -> str:
    if not isinstance(x, list):
        return "-"
    indices = [str(i) for i in x[:MAX_ROWS] if _count(i) is not None]
    return clean(",".join(indices), 16) or "-"


def _state(c: dict[str, Any]) -> str:
    state = clean(c.get("state"), 12) or ("done" if c.get("ok") is True else "failed")
    error = clean(c.get("error"), CELL)  # why it failed, or why it was cancelled
    return f"{state}: {error}" if error and c.get("ok") is not True else state


def row(c: dict[str, Any], winner: int | None, votes: dict[str, Any]) -> tuple[str, ...]:
    """One candidate's cells, in COLUMNS order."""
    cand, group = _count(c.get("cand")), _count(c.get("group"))
    latency = _number(c.get("latency_s"))
    return ("*" if cand is not None and cand == winner else "",
            "?" if cand is None else str(cand), clean(c.get("peer"), 16) or "-", _answer(c),
            "-" if group is None else str(group), _score(c, votes), _agreed(c.get("agreed")),
            "-" if latency is None or latency < 0 else f"{latency:.1f}s", _state(c))


def vote_lines(result: dict[str, Any]) -> list[str]:
    """How the vote went, in a line or two: what counted and why the winner won; early quorum."""
    vote = result.get("vote")
    if not isinstance(vote, dict):
        return []
    lines = []
    method, reason = clean(vote.get("method"), 16), clean(vote.get("reason"), 3 * WIDTH)
    if method or reason:
        lines.append(f"vote ({method or '?'}): {reason}" if reason else f"vote: {method}")
    cancelled, saved = _count(vote.get("cancelled")), _number(vote.get("saved_s"))
    if cancelled:
        more = f", ~{saved:.1f} s saved" if saved is not None and saved >= 0 else ""
        lines.append(f"early quorum: {cancelled} cancelled{more}")
    return lines


def vote_table(result: dict[str, Any], width: int = WIDTH) -> list[str]:
    """The table of candidates (winner marked *) in at most `width` columns, then
    vote_lines; no table for no candidates."""
    width = max(min(width, WIDTH), 40)
    cands = result.get("candidates")
    cands = [c for c in cands if isinstance(c, dict)] if isinstance(cands, list) else []
    winner = result.get("winner")
    winner_cand = _count(winner.get("cand")) if isinstance(winner, dict) else None
    votes = result.get("votes") if isinstance(result.get("votes"), dict) else {}
    rows = [COLUMNS] + [row(c, winner_cand, votes) for c in cands[:MAX_ROWS]]
    lines = _layout(rows, width) if cands else []
    if len(cands) > MAX_ROWS:
        lines.append(f"({len(cands) - MAX_ROWS} more candidates not shown)")
    for line in vote_lines(result):  # the reason may take a few lines; no more
        wrapped = textwrap.wrap(line, width, subsequent_indent="  ", max_lines=_REASON_LINES,
                                placeholder=" \u2026")
        lines += [_fit(part, width) for part in wrapped]
    return lines


def _layout(rows: list[tuple[str, ...]], width: int) -> list[str]:
    """Columns as wide as their widest cell up to a cap; the wide ones give way to fit."""
    widths = [min(max(cell_len(r[i]) for r in rows), _MAX_WIDTHS.get(col, CELL))
              for i, col in enumerate(COLUMNS)]
    flexible = [COLUMNS.index(col) for col in ("answer", "state", "peer")]
    over = sum(widths) + _GAP * (len(widths) - 1) - width
    while over > 0:  # the widest of the wide columns gives way, one cell at a time
        i = max(flexible, key=lambda j: widths[j])
        if widths[i] <= _MIN_WIDTH:
            break
        widths[i], over = widths[i] - 1, over - 1
    return [(" " * _GAP).join(_fit(cell, w, pad=True) for cell, w in zip(r, widths)).rstrip()
            for r in rows]


def _fit(text: str, width: int, pad: bool = False) -> str:
    """`text` in `width` terminal cells (wide characters count two), cut with an ellipsis."""
    if cell_len(text) > width:
        text = set_cell_size(text, width - 1) + "\u2026"
    return set_cell_size(text, width) if pad else text
