"""What a person watching `swarm-ask` sees: live per-candidate progress, then the winner."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

_SNIPPET = 48


class Progress:
    """Per-candidate state from the broker's progress events, drawn live on a TTY."""

    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None):
        self.stream = stream
        self.rows: dict[int, dict[str, Any]] = {}
        self.console = Console(file=stream, stderr=stream is sys.stderr)
        use_live = self.console.is_terminal if live is None else live
        self.live = Live(self._table(), console=self.console, transient=False,
                         refresh_per_second=12) if use_live else None

    def __enter__(self) -> "Progress":
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def on_event(self, event: dict[str, Any]) -> None:
        cand = event.get("cand")
        if not isinstance(cand, int):
            return
        row = self.rows.setdefault(cand, {"peer": "", "state": "", "tokens": 0, "text": ""})
        kind = event.get("event")
        row["peer"] = event.get("peer") or row["peer"]
        row["tokens"] = event.get("tokens", row["tokens"])
        if kind == "token":
            # keep only a tail: the view shows the last _SNIPPET characters of each answer
            tail = (row["text"] + str(event.get("text", "")))[-4 * _SNIPPET:]
            row["state"], row["text"] = "streaming", tail
        elif kind in ("dispatched", "retry"):
            row["state"], row["text"] = ("running", "") if kind == "dispatched" else ("retrying", "")
        elif kind in ("done", "failed"):
            row["state"] = kind
            if kind == "failed":
                row["text"] = str(event.get("text", ""))
        if self.live:
            self.live.update(self._table())
        elif kind in ("dispatched", "done", "failed", "retry"):
            detail = f" ({row['text']})" if kind in ("failed", "retry") else ""
            print(f"candidate {cand} on {row['peer']}: {kind}, {row['tokens']} tokens{detail}",
                  file=self.stream, flush=True)

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        for col in ("cand", "peer", "state", "tokens", "text"):
            table.add_column(col, no_wrap=True, overflow="ellipsis",
                             max_width=_SNIPPET if col == "text" else None)
        for cand in sorted(self.rows):
            row = self.rows[cand]
            text = row["text"].replace("\n", " ").strip()[-_SNIPPET:]
            table.add_row(str(cand), row["peer"], row["state"], str(row["tokens"]), text)
        return table


def summary(result: dict[str, Any]) -> str:
    w = result["winner"]
    cands = result["candidates"]
    ok = sum(1 for c in cands if c["ok"])
    score = result["votes"].get(str(w["cand"]))
    return (f"winner: candidate {w['cand']} from {w['peer']} ({result['strategy']} "
            f"score {score}), {ok}/{len(cands)} candidates ok")


def json_result(result: dict[str, Any]) -> dict[str, Any]:
    """The `--json` shape: winner {text, peer, candidate}, candidates, strategy, votes."""
    w = result["winner"]
    return {
        "winner": {"text": w["text"], "peer": w["peer"], "candidate": w["cand"]},
        "candidates": [{"candidate": c["cand"], "peer": c["peer"], "text": c["text"],
                        "ok": c["ok"], "error": c["error"], "latency_s": c["latency_s"],
                        "tokens": c["tokens"]} for c in result["candidates"]],
        "strategy": result["strategy"],
        "votes": result["votes"],
        "usage": result.get("usage", {}),
    }


def peers_table(peers: list[dict[str, Any]], console: Console) -> None:
    table = Table(header_style="bold")
    for col in ("peer", "live", "slots", "backend", "model", "req", "ok", "fail", "timeouts",
                "wins", "mean s", "ttft s", "last error"):
        table.add_column(col)
    for p in peers:
        m, prof = p["metrics"], p["profile"] or {}
        table.add_row(p["name"], "yes" if p["live"] else "no", f"{p['busy']}/{p['slots']}",
                      prof.get("backend", ""), prof.get("model", ""), str(m["requests"]),
                      str(m["successes"]), str(m["failures"]), str(m["timeouts"]), str(m["wins"]),
                      _num(m["latency_mean_s"]), _num(m["ttft_mean_s"]), m["last_error"] or "")
    console.print(table)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
