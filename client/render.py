"""What a person watching `swarm-ask` sees: live per-candidate progress, then the winner."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from client.cells import clean, num
from client.cells import is_count as _is_count
from client.cells import text as _text

__all__ = ["Progress", "Streamer", "clean", "json_result", "plain", "summary"]

_SNIPPET = 48
EVENTS = ("dispatched", "token", "retry", "done", "failed", "cancelled")
VOTE_KEYS = ("answer", "group", "score", "agreed", "logprob")  # how each candidate voted


class Progress:
    """Per-candidate state from the broker's progress events, drawn live on a TTY."""

    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None,
                 quiet: bool = False, transient: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.quiet, self.clock = stream, quiet, clock
        self.rows: dict[int, dict[str, Any]] = {}
        self.console = Console(file=stream, stderr=stream is sys.stderr)
        use_live = self.console.is_terminal if live is None else live
        self.live = Live(self._table(), console=self.console, transient=transient,
                         refresh_per_second=12) if use_live and not quiet else None

    def __enter__(self) -> "Progress":
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def on_event(self, event: dict[str, Any]) -> None:
        cand, kind = event.get("cand"), event.get("event")
        if not _is_count(cand) or kind not in EVENTS:
            return  # events come from the network: ignore what we cannot place
        now = self.clock()
        row = self.rows.setdefault(cand, {"peer": "", "state": "", "tokens": 0, "text": "",
                                          "since": now, "at": now})
        row["peer"] = _text(event.get("peer")) or row["peer"]
        row["tokens"] = event["tokens"] if _is_count(event.get("tokens")) else row["tokens"]
        if kind in ("dispatched", "retry"):
            row["since"] = now  # its rate counts from when this try started
        if kind in ("token", "done"):
            row["at"] = now  # ... up to its last token, or its end
        raw = event.get("text") if isinstance(event.get("text"), str) else ""
        if kind == "token":
            # keep only a raw tail (a piece's leading space parts it from the last word);
            # the view shows the last _SNIPPET characters of each answer, cleaned
            tail = (row["text"] + raw[-4 * _SNIPPET:])[-4 * _SNIPPET:]
            row["state"], row["text"] = "streaming", tail
        elif kind in ("dispatched", "retry"):
            row["state"], row["text"] = ("running" if kind == "dispatched" else "retrying"), ""
        else:  # done, failed, cancelled (the vote no longer needed it: not a failure)
            row["state"] = kind
            if kind == "failed":
                row["text"] = _text(raw)
        if self.live:
            self.live.update(self._table())
        elif kind != "token" and not self.quiet:
            detail = f" ({row['text']})" if kind in ("failed", "retry") else ""
            detail += f" at {rate(row)} tok/s" if kind == "done" and rate(row) != "-" else ""
            where = f" on {row['peer']}" if row["peer"] else ""
            print(f"candidate {cand}{where}: {kind}, {row['tokens']} tokens{detail}",
                  file=self.stream, flush=True)

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        for col in ("cand", "peer", "state", "tokens", "tok/s", "text"):
            table.add_column(col, no_wrap=True, overflow="ellipsis",
                             max_width=_SNIPPET if col == "text" else None)
        for cand in sorted(self.rows):
            row = self.rows[cand]
            text = _text(row["text"])[-_SNIPPET:]
            # Text, not str: a cell is never read as rich markup ("[/x]" would raise)
            table.add_row(*map(Text, (str(cand), row["peer"], row["state"],
                                      str(row["tokens"]), rate(row), text)))
        return table


def rate(row: dict[str, Any]) -> str:
    """A candidate's tokens per second, from the start of its try to its last token (as the
    broker counts a peer's tok/s: the wait for the first token included); "-" before any."""
    took = row["at"] - row["since"]
    return num(row["tokens"] / took, 1) if row["tokens"] and took > 0 else "-"


class Streamer:
    """Writes the winner's text to `out` as it is written, when the strategy lets us know it.

    With `first`, the first candidate that streams is shown token by token; the FINAL then
    says who won. Token events may have been shed on the way, so what was shown is checked
    against the winner's text, and the whole text follows when they differ.
    """

    def __init__(self, out: TextIO, live: bool):
        self.out, self.live = out, live
        self.cand: int | None = None
        self.shown = ""

    def on_event(self, event: dict[str, Any]) -> None:
        cand, text = event.get("cand"), event.get("text")
        if not self.live or event.get("event") != "token" or not _is_count(cand) \
                or not isinstance(text, str) or self.cand not in (None, cand):
            return
        self.cand = cand
        piece = text if self.shown.strip() else text.lstrip()
        self.shown += text
        if piece:
            self.out.write(piece)
            self.out.flush()

    def finish(self, result: dict[str, Any]) -> str | None:
        """Write what is not on screen yet; returns a note for stderr when text was redone."""
        winner = result["winner"]
        text, note = winner["text"], None
        if self.cand is None or not self.shown.strip():
            self.out.write(text.strip() + "\n")
        elif winner["cand"] == self.cand and text.startswith(self.shown):
            self.out.write(text[len(self.shown):].rstrip() + "\n")
        else:
            self.out.write("\n" + text.strip() + "\n")
            note = (f"the winner is candidate {winner['cand']}, not the streamed candidate "
                    f"{self.cand}: its whole text follows" if winner["cand"] != self.cand else
                    "some streamed text was lost on the way: the whole answer follows")
        self.out.flush()
        return note


def summary(result: dict[str, Any]) -> str:
    w = result["winner"]
    cands = _maps(result.get("candidates"))
    ok = sum(1 for c in cands if c.get("ok") is True)
    votes = result.get("votes") if isinstance(result.get("votes"), dict) else {}
    score = votes.get(str(w["cand"]))
    return (f"winner: candidate {w['cand']} from {_text(w.get('peer')) or '?'} "
            f"({_text(result.get('strategy')) or '?'} score {num(score)}), "
            f"{ok}/{len(cands)} candidates ok")


def json_result(result: dict[str, Any]) -> dict[str, Any]:
    """The `--json` shape: winner {text, peer, candidate}, candidates (each with how it
    voted), strategy, vote (what counted, why the winner won, early quorum), votes, usage."""
    w = result["winner"]
    return {
        "winner": {"text": w["text"], "peer": w.get("peer"), "candidate": w["cand"]},
        "candidates": [{"candidate": c.get("cand"), "peer": c.get("peer"), "text": c.get("text"),
                        "ok": c.get("ok"), "state": c.get("state"), "error": c.get("error"),
                        "latency_s": c.get("latency_s"), "tokens": c.get("tokens"),
                        **{k: c.get(k) for k in VOTE_KEYS}}
                       for c in _maps(result.get("candidates"))],
        "strategy": result.get("strategy"),
        "vote": result.get("vote"),
        "votes": result.get("votes", {}),
        "usage": result.get("usage", {}),
    }


def plain(x: Any, depth: int = 0) -> Any:
    """A peer's value as JSON can carry it: text keys only, bytes as text, no nan or inf
    (null), no nesting deeper than 32 (null); so `--json` never fails on what came."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int)) or depth > 32:
        return x if depth <= 32 else None
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if isinstance(x, dict):
        return {k: plain(v, depth + 1) for k, v in x.items() if isinstance(k, str)}
    if isinstance(x, (list, tuple)):
        return [plain(v, depth + 1) for v in x]
    return str(x)


def _maps(x: Any) -> list[dict[str, Any]]:
    return [c for c in x if isinstance(c, dict)] if isinstance(x, list) else []
