"""What a person watching `swarm-ask` sees: live per-candidate progress, then the winner."""

from __future__ import annotations

import math
import sys
import unicodedata
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

_SNIPPET = 48
EVENTS = ("dispatched", "token", "retry", "done", "failed", "cancelled")
WIDTH = 80  # --peers never draws wider than this
_TEXT_MAX = 4096  # characters of one piece of peer text kept for the screen
_JOINERS = {"\u200c", "\u200d"}  # format characters that emoji and scripts need
VOTE_KEYS = ("answer", "group", "score", "agreed", "logprob")  # how each candidate voted
TIMEOUT_SOURCES = ("override", "hint", "learned", "default")  # broker/adaptive.py SOURCES


class Progress:
    """Per-candidate state from the broker's progress events, drawn live on a TTY."""

    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None,
                 quiet: bool = False, transient: bool = False):
        self.stream, self.quiet = stream, quiet
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
        row = self.rows.setdefault(cand, {"peer": "", "state": "", "tokens": 0, "text": ""})
        row["peer"] = _text(event.get("peer")) or row["peer"]
        row["tokens"] = event["tokens"] if _is_count(event.get("tokens")) else row["tokens"]
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
            where = f" on {row['peer']}" if row["peer"] else ""
            print(f"candidate {cand}{where}: {kind}, {row['tokens']} tokens{detail}",
                  file=self.stream, flush=True)

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        for col in ("cand", "peer", "state", "tokens", "text"):
            table.add_column(col, no_wrap=True, overflow="ellipsis",
                             max_width=_SNIPPET if col == "text" else None)
        for cand in sorted(self.rows):
            row = self.rows[cand]
            text = _text(row["text"])[-_SNIPPET:]
            # Text, not str: a cell is never read as rich markup ("[/x]" would raise)
            table.add_row(*map(Text, (str(cand), row["peer"], row["state"],
                                      str(row["tokens"]), text)))
        return table


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
            f"({_text(result.get('strategy')) or '?'} score {score}), "
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


def peer_lines(peers: list[dict[str, Any]]) -> list[str]:
    """--peers as plain text: a few lines per peer, none wider than WIDTH; dead peers `lost`."""
    if not peers:
        return ["no workers"]
    lines = []
    for p in peers:
        m = p.get("metrics") if isinstance(p.get("metrics"), dict) else {}
        prof = p.get("profile") if isinstance(p.get("profile"), dict) else {}
        state = (f"live, {_int(p.get('busy'))}/{_int(p.get('slots'))} slots busy"
                 if p.get("live") is True else _state(p))
        what = " ".join(x for x in (_text(prof.get("backend")), _text(prof.get("model"))) if x)
        lines.append(f"{_text(p.get('name')) or '?'}: {state}" + (f", {what}" if what else ""))
        lines.append(f"  {_int(m.get('requests'))} req, {_int(m.get('successes'))} ok, "
                     f"{_int(m.get('failures'))} failed ({_int(m.get('timeouts'))} timeouts), "
                     f"{_int(m.get('wins'))} wins; p95 {_num(m.get('latency_p95_s'))} s, "
                     f"{_num(m.get('tokens_per_s'), 1)} tok/s")
        if timeout_text(p):
            lines.append(f"  timeout {timeout_text(p, long=True)}")
        if hardware_summary(prof):
            lines.append(f"  {hardware_summary(prof)}")
        if _text(m.get("last_error")):
            lines.append(f"  last error: {_text(m.get('last_error'))}")
    return [_clip(line) for line in lines]


def hardware_summary(profile: dict[str, Any]) -> str:
    """One line on a peer's machine: platform, cores, RAM, GPUs, offload; "" when unknown."""
    hw = profile.get("hardware") if isinstance(profile.get("hardware"), dict) else {}
    parts = [" ".join(x for x in (_text(hw.get("platform")), _text(hw.get("arch")))
                      if x and x != "unknown")]
    if _is_count(hw.get("cores_logical")) and hw["cores_logical"]:
        parts.append(f"{hw['cores_logical']} cores")
    if _is_count(hw.get("ram_total_mb")) and hw["ram_total_mb"]:
        parts.append(f"{hw['ram_total_mb'] / 1024:.1f} GB RAM")
    gpus = [g for g in hw.get("gpus", []) if isinstance(g, dict)] \
        if isinstance(hw.get("gpus"), list) else []
    for g in gpus:
        vram = f" {g['vram_total_mb'] / 1024:.0f} GB" if _is_count(g.get("vram_total_mb")) else ""
        parts.append(f"{_text(g.get('name')) or 'GPU'}{vram}")
    if hw.get("apple_silicon") is True and _text(hw.get("chip")):
        parts.append(_text(hw.get("chip")))
    layers = profile.get("gpu_layers")
    if isinstance(layers, int) and not isinstance(layers, bool) and layers != 0:
        parts.append("all layers on GPU" if layers < 0 else f"{layers} layers on GPU")
    return ", ".join(p for p in parts if p)


def peers_table(peers: list[dict[str, Any]], console: Console) -> None:
    """--peers on a terminal: one row a peer, fitted to at most WIDTH columns."""
    if not peers:
        console.print("no workers")
        return
    table = Table(header_style="bold", box=None, width=min(console.width, WIDTH))
    for col in ("peer", "state", "busy", "req", "ok", "fail", "wins", "p95 s", "tok/s",
                "last error"):
        text = col in ("peer", "last error")
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=16 if text else None,
                         min_width=None if text else len(col),
                         justify="left" if text or col == "state" else "right")
    for p in peers:
        m = p.get("metrics") if isinstance(p.get("metrics"), dict) else {}
        live = p.get("live") is True
        cells = (_text(p.get("name")) or "?", _state(p),
                 f"{_int(p.get('busy'))}/{_int(p.get('slots'))}" if live else "-",
                 *(_int(m.get(k)) for k in ("requests", "successes", "failures", "wins")),
                 _num(m.get("latency_p95_s")), _num(m.get("tokens_per_s"), 1),
                 _text(m.get("last_error")))
        table.add_row(*map(Text, cells))
    console.print(table)
    machines = [(_text(p.get("name")) or "?", timeout_text(p) or "-",
                 hardware_summary(p["profile"]) if isinstance(p.get("profile"), dict) else "")
                for p in peers]
    if any(t != "-" or hw for _, t, hw in machines):  # the timeout in force, the machine
        hw = Table(header_style="bold", box=None, width=min(console.width, WIDTH))
        hw.add_column("peer", no_wrap=True, overflow="ellipsis", max_width=16)
        hw.add_column("timeout", no_wrap=True)
        hw.add_column("hardware", overflow="fold")
        for row in machines:
            hw.add_row(*map(Text, row))
        console.print(hw)


def timeout_text(p: dict[str, Any], long: bool = False) -> str:
    """The timeout in force and its source ("8.7 s learned", long: "(for 256 tokens)" more);
    "" where the broker did not say, or said something strange."""
    t = p.get("timeout") if isinstance(p.get("timeout"), dict) else {}
    if _num(t.get("s"), 1) == "-" or t.get("source") not in TIMEOUT_SOURCES:
        return ""
    tokens = f" (for {t['max_tokens']} tokens)" if long and _is_count(t.get("max_tokens")) else ""
    return f"{_num(t['s'], 1)} s {t['source']}{tokens}"


def _state(p: dict[str, Any]) -> str:
    """live (connected), advertised (on mDNS only: not connected), or lost."""
    if p.get("live") is True:
        return "live"
    return "advertised" if p.get("advertised") is True else "lost"


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31


def _text(x: Any) -> str:
    """Peer text as one printable line: no control or format characters (terminal escapes,
    bidi overrides), whitespace runs as one space; "" for what is not text."""
    return clean(x, _TEXT_MAX)


def clean(x: Any, limit: int) -> str:
    """`_text` cut to `limit` characters, its end marked "..." where it was cut."""
    if not isinstance(x, str):
        return ""
    head = "".join(ch for ch in x[:limit + 64] if ch in _JOINERS
                   or not unicodedata.category(ch).startswith("C") or ch in "\t\n\r")
    line = " ".join(head.split())
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."


def _int(x: Any) -> str:
    return str(x) if _is_count(x) else "-"


def _num(x: Any, digits: int = 2) -> str:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return f"{x:.{digits}f}" if ok else "-"


def _clip(line: str) -> str:
    return line if len(line) <= WIDTH else line[:WIDTH - 3] + "..."
