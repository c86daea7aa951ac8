"""`swarm-ask --peers --watch`: the peers view, asked for again every interval until Ctrl-C.

On a terminal the view is redrawn in place (rich Live); in a pipe each interval prints a
fresh block of lines headed by the time, and with `--json` one JSON object a line. A broker
that stops answering is said in the view (since when, and why), the last peers it gave stay
on screen, and the watch goes on asking: a broker that comes back is shown again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from client.cells import WIDTH, clean
from client.peers_view import peer_lines, peers_view
from client.render import plain
from common.errors import SwarmError

Fetch = Callable[[], list[dict[str, Any]]]


@dataclass(slots=True)
class Watch:
    """What the watch knows: the last peers the broker gave, and whether it answers now."""

    broker: str
    interval_s: float
    peers: list[dict[str, Any]] | None = None
    seen_at: float | None = None      # wall time of the last answer
    error: str | None = None          # why the last ask failed; None: it answered
    away_since: float | None = None   # wall time of the first failed ask of this outage
    back_at: float | None = None      # wall time the broker answered again after an outage
    asked_at: float | None = None     # wall time of the last ask

    def answered(self, peers: list[dict[str, Any]], now: float) -> None:
        if self.error is not None and self.seen_at is not None:
            self.back_at = now
        self.peers, self.seen_at, self.error, self.away_since = peers, now, None, None
        self.asked_at = now

    def failed(self, error: str, now: float) -> None:
        self.away_since = self.away_since if self.error is not None else now
        self.error, self.asked_at = clean(error, 200), now

    def headline(self) -> str:
        if self.error is not None:
            return (f"{self.broker}: not answering since {_clock(self.away_since)} "
                    f"({self.error}); asking again every {self.interval_s:g} s")
        n = len(self.peers or [])
        back = f", back since {_clock(self.back_at)}" if self.back_at is not None else ""
        return (f"{self.broker}: {n} peer{'s' if n != 1 else ''} at {_clock(self.seen_at)}"
                f"{back}; every {self.interval_s:g} s, Ctrl-C stops")

    def view(self, width: int) -> RenderableType:
        parts: list[RenderableType] = [Text(self.headline(), style="bold")]
        if self.peers is not None:
            if self.error is not None:
                parts.append(Text(f"as last seen at {_clock(self.seen_at)}:", style="dim"))
            parts.append(peers_view(self.peers, width))
        return Group(*parts)

    def lines(self) -> list[str]:
        """A pipe's block for this interval: the headline, then the peers (when answered)."""
        body = peer_lines(self.peers or []) if self.error is None else []
        return [f"--- {self.headline()}", *body]

    def record(self) -> dict[str, Any]:
        """`--json`: one object a line, `peers` when the broker answered, else `error`."""
        out: dict[str, Any] = {"time": _iso(self.asked_at), "broker": self.broker}
        if self.error is None:
            out["peers"] = plain(self.peers or [])
        else:
            out["error"], out["since"] = self.error, _iso(self.away_since)
        return out


def watch(fetch: Fetch, watch_state: Watch, out: TextIO, as_json: bool = False,
          live: bool | None = None, sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.time) -> None:
    """Ask, show, wait, again, until Ctrl-C (which ends the watch quietly: it is the way out)."""
    console = Console(file=out)
    use_live = (console.is_terminal if live is None else live) and not as_json
    shown = Live(console=console, auto_refresh=False, redirect_stderr=False) if use_live else None
    try:
        if shown is not None:
            shown.start()
        while True:
            try:
                watch_state.answered(fetch(), clock())
            except SwarmError as e:
                watch_state.failed(str(e), clock())
            if shown is not None:
                shown.update(watch_state.view(min(console.width, WIDTH)), refresh=True)
            else:
                text = json.dumps(watch_state.record()) if as_json else \
                    "\n".join(watch_state.lines())
                out.write(text + "\n")
                out.flush()
            sleep(watch_state.interval_s)
    except KeyboardInterrupt:
        pass
    finally:
        if shown is not None:
            shown.stop()


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t is not None else "?"


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t)) if t is not None else None
