"""`swarm-ask --peers`: each worker with its metrics, model, machine and the timeout in force,
as plain lines (a pipe), tables at most WIDTH columns wide (a terminal), or refreshed in
place with `--watch` (client/peers_watch.py)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from broker.adaptive import SOURCES as TIMEOUT_SOURCES
from client.cells import WIDTH, clip, count, is_count, num, text

_COLUMNS = ("peer", "state", "busy", "req", "ok", "fail", "wins", "p95 s", "tok/s", "last error")


def peer_lines(peers: list[dict[str, Any]]) -> list[str]:
    """--peers as plain text: a few lines per peer, none wider than WIDTH; dead peers `lost`."""
    if not peers:
        return ["no workers"]
    lines = []
    for p in peers:
        m = _map(p.get("metrics"))
        prof = _map(p.get("profile"))
        state = (f"live, {count(p.get('busy'))}/{count(p.get('slots'))} slots busy"
                 if p.get("live") is True else _state(p))
        what = model_text(prof)
        lines.append(f"{text(p.get('name')) or '?'}: {state}" + (f", {what}" if what else ""))
        lines.append(f"  {count(m.get('requests'))} req, {count(m.get('successes'))} ok, "
                     f"{count(m.get('failures'))} failed ({count(m.get('timeouts'))} timeouts), "
                     f"{count(m.get('wins'))} wins; p95 {num(m.get('latency_p95_s'))} s, "
                     f"{num(m.get('tokens_per_s'), 1)} tok/s")
        if timeout_text(p):
            lines.append(f"  timeout {timeout_text(p, long=True)}")
        if hardware_summary(prof):
            lines.append(f"  {hardware_summary(prof)}")
        if text(m.get("last_error")):
            lines.append(f"  last error: {text(m.get('last_error'))}")
    return [clip(line) for line in lines]


def model_text(profile: dict[str, Any]) -> str:
    """The backend and model a peer serves ("llama.cpp gemma-3-270m"); "" when unknown."""
    return " ".join(x for x in (text(profile.get("backend")), text(profile.get("model"))) if x)


def hardware_summary(profile: dict[str, Any]) -> str:
    """One line on a peer's machine: platform, cores, RAM, GPUs, offload; "" when unknown."""
    hw = _map(profile.get("hardware"))
    parts = [" ".join(x for x in (text(hw.get("platform")), text(hw.get("arch")))
                      if x and x != "unknown")]
    if is_count(hw.get("cores_logical")) and hw["cores_logical"]:
        parts.append(f"{hw['cores_logical']} cores")
    if is_count(hw.get("ram_total_mb")) and hw["ram_total_mb"]:
        parts.append(f"{hw['ram_total_mb'] / 1024:.1f} GB RAM")
    gpus = [g for g in hw.get("gpus", []) if isinstance(g, dict)] \
        if isinstance(hw.get("gpus"), list) else []
    for g in gpus:
        vram = f" {g['vram_total_mb'] / 1024:.0f} GB" if is_count(g.get("vram_total_mb")) else ""
        parts.append(f"{text(g.get('name')) or 'GPU'}{vram}")
    if hw.get("apple_silicon") is True and text(hw.get("chip")):
        parts.append(text(hw.get("chip")))
    layers = profile.get("gpu_layers")
    if isinstance(layers, int) and not isinstance(layers, bool) and layers != 0:
        parts.append("all layers on GPU" if layers < 0 else f"{layers} layers on GPU")
    return ", ".join(p for p in parts if p)


def peers_table(peers: list[dict[str, Any]], console: Console) -> None:
    """--peers on a terminal: one row a peer, fitted to at most WIDTH columns."""
    console.print(peers_view(peers, min(console.width, WIDTH)))


def peers_view(peers: list[dict[str, Any]], width: int) -> RenderableType:
    """The metrics table, then each peer's timeout in force, model and machine."""
    if not peers:
        return Text("no workers")
    table = Table(header_style="bold", box=None, width=width)
    for col in _COLUMNS:
        wide = col in ("peer", "last error")
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=16 if wide else None,
                         min_width=None if wide else len(col),
                         justify="left" if wide or col == "state" else "right")
    for p in peers:
        m = _map(p.get("metrics"))
        live = p.get("live") is True
        cells = (text(p.get("name")) or "?", _state(p),
                 f"{count(p.get('busy'))}/{count(p.get('slots'))}" if live else "-",
                 *(count(m.get(k)) for k in ("requests", "successes", "failures", "wins")),
                 num(m.get("latency_p95_s")), num(m.get("tokens_per_s"), 1),
                 text(m.get("last_error")))
        table.add_row(*map(Text, cells))  # Text: a cell is never read as rich markup
    machines = [(text(p.get("name")) or "?", timeout_text(p) or "-",
                 model_text(_map(p.get("profile"))) or "-",
                 hardware_summary(_map(p.get("profile")))) for p in peers]
    if not any(row[1:] != ("-", "-", "") for row in machines):
        return table
    hw = Table(header_style="bold", box=None, width=width)
    hw.add_column("peer", no_wrap=True, overflow="ellipsis", max_width=16)
    hw.add_column("timeout", no_wrap=True)
    hw.add_column("model", no_wrap=True, overflow="ellipsis", max_width=20)
    hw.add_column("hardware", overflow="fold")
    for row in machines:
        hw.add_row(*map(Text, row))
    return Group(table, hw)


def timeout_text(p: dict[str, Any], long: bool = False) -> str:
    """The timeout in force and its source ("8.7 s learned", long: "(for 256 tokens)" more);
    "" where the broker did not say, or said something strange."""
    t = _map(p.get("timeout"))
    if num(t.get("s"), 1) == "-" or t.get("source") not in TIMEOUT_SOURCES:
        return ""
    tokens = f" (for {t['max_tokens']} tokens)" if long and is_count(t.get("max_tokens")) else ""
    return f"{num(t['s'], 1)} s {t['source']}{tokens}"


def _state(p: dict[str, Any]) -> str:
    """disabled (by the broker's config), live (connected), advertised (on mDNS only: not
    connected), or lost."""
    if p.get("disabled") is True:
        return "disabled"
    if p.get("live") is True:
        return "live"
    return "advertised" if p.get("advertised") is True else "lost"


def _map(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}
