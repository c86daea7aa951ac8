"""What the live web page sees: every job as it plays out and the peers, as events for
whoever watches (the page's event stream, broker/web.py). Pure logic on the broker's loop.

Nobody watching costs one attribute read per event: the hooks the job flow calls return
at once while `active` is false; only the last RECENT_JOBS ended jobs are kept (a
reference each), so a page opened later still shows them. With watchers, events wait in
`pending` until `flush` (every FLUSH_S) serialises them once, as one SSE message for all;
a candidate's token events in one flush are merged. A watcher that lets more than
MAX_BACKLOG messages pile up is dropped (its page reconnects and starts from a snapshot),
so a slow page never holds the broker's memory.

Events and their fields are documented in docs/web.md.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from broker.jobs import PENDING, Candidate, Job

RECENT_JOBS = 20     # ended jobs a new page is shown
FLUSH_S = 0.1        # events go out this often, merged
PEERS_EVERY_S = 1.0  # the peer list is looked at this often (sent only when it changed)
MAX_BACKLOG = 256    # messages waiting for one watcher before it is dropped


class Watcher:
    """One page's stream: messages wait here until its handler writes them."""

    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self.messages: deque[bytes] = deque()
        self.dropped = False
        self.wake = wake

    def take(self) -> bytes:
        """Everything waiting, as one write."""
        out = b"".join(self.messages)
        self.messages.clear()
        return out


def sse(events: list[dict[str, Any]]) -> bytes:
    """One SSE message: the events as a JSON array (strict JSON: a browser's JSON.parse
    takes no NaN or Infinity, which become null)."""
    try:
        text = json.dumps(events, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(events), ensure_ascii=False, default=str)
    return b"data: " + text.encode() + b"\n\n"


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class Watch:
    def __init__(self, recent: int = RECENT_JOBS, clock: Callable[[], float] = time.time) -> None:
        self.watchers: set[Watcher] = set()
        self.active = False
        self.pending: list[dict[str, Any]] = []
        self._open: dict[tuple[str, int], dict[str, Any]] = {}  # a candidate's mergeable tokens
        # ended jobs: (job, FINAL, wall time it was created, seconds it took)
        self.recent: deque[tuple[Job, dict[str, Any], float, float]] = deque(maxlen=recent)
        self.clock = clock  # wall time, for the page's clocks
        self._peers_at = float("-inf")
        self._peers_sent: str | None = None
        self.stats = {"dropped": 0, "messages": 0}

    # -- watchers --------------------------------------------------------------------------
    def subscribe(self, watcher: Watcher, snapshot: dict[str, Any]) -> bytes:
        """Add a watcher; returns its first message (the snapshot). What was pending is
        flushed to the others first, so the new one sees each event exactly once."""
        self.flush()
        self.watchers.add(watcher)
        self.active = True
        return sse([{"type": "snapshot", **snapshot}])

    def unsubscribe(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        if not self.watchers:
            self.active = False
            self.pending.clear()
            self._open.clear()
            self._peers_sent = None

    # -- hooks the job flow calls --------------------------------------------------------------
    def accepted(self, job: Job, now: float) -> None:
        if self.active:
            self._add({"type": "job", "job": self.job_view(job, self._wall(job.created_at, now))})

    def cand(self, job: Job, cand: Candidate, event: str, text: str = "") -> None:
        if not self.active:
            return
        key = (job.id, cand.index)
        if event == "token":
            merged = self._open.get(key)
            if merged is not None:
                merged["text"] += text
                merged["tokens"] = cand.tokens
                return
        # the text is the event's own (a token's new text), never the whole so far: a
        # long answer would cost its length on every token; a finished one is sent whole
        out = {"type": "cand", "job": job.id, **cand_view(cand, job, with_text=False),
               "event": event, "text": cand.text if event == "done" else text}
        if event == "retry":  # it waits for another slot: what it streamed is dropped
            out.update(state=PENDING, peer=None, text="")
        if event in ("failed", "retry", "cancelled"):
            out["error"] = text
        if event == "token":
            self._open[key] = out
        else:
            self._open.pop(key, None)
        self._add(out)

    def ended(self, job: Job, body: dict[str, Any], now: float) -> None:
        took = round(now - job.created_at, 3)
        self.recent.appendleft((job, body, self._wall(job.created_at, now), took))
        if self.active:
            self._add({"type": "end", "job": job.id, "state": _state(body), "took_s": took,
                       "final": body})
            self._peers_at = float("-inf")  # its peers' metrics moved: look at once

    # -- going out -------------------------------------------------------------------------
    def flush(self, now: float = 0.0, peers: Callable[[], list] | None = None) -> int:
        """Send what is pending (and the peer list, when it changed) to every watcher as
        one message; returns how many watchers got it."""
        if peers is not None and now - self._peers_at >= PEERS_EVERY_S and self.watchers:
            self._peers_at = now
            listed = peers()
            text = json.dumps(listed, sort_keys=True, default=str)
            if text != self._peers_sent:
                self._peers_sent = text
                self._add({"type": "peers", "peers": listed})
        if not self.pending:
            return 0
        message = sse(self.pending)
        self.pending = []
        self._open.clear()
        self.stats["messages"] += 1
        for watcher in list(self.watchers):
            if len(watcher.messages) >= MAX_BACKLOG:
                watcher.dropped = True
                self.stats["dropped"] += 1
                self.unsubscribe(watcher)
            else:
                watcher.messages.append(message)
            watcher.wake()
        return len(self.watchers)

    def snapshot(self, broker: dict[str, Any], peers: list, jobs: list[Job],
                 now: float) -> dict[str, Any]:
        """What a new page starts from: the running jobs, then the recent ended ones."""
        running = [self.job_view(j, self._wall(j.created_at, now))
                   for j in sorted(jobs, key=lambda j: -j.created_at)]
        ended = [self.job_view(j, at, body, took) for j, body, at, took in self.recent]
        if not self.watchers:  # the first page: its list is what the next change is from
            self._peers_sent = json.dumps(peers, sort_keys=True, default=str)
            self._peers_at = now
        return {"broker": broker, "peers": peers, "jobs": running + ended}

    @staticmethod
    def job_view(job: Job, created: float, final: dict[str, Any] | None = None,
                 took: float | None = None) -> dict[str, Any]:
        """A job as the page shows it; `created` is wall time."""
        return {"id": job.id, "question": job.question, "model": job.request.model,
                "strategy": job.request.strategy, "n": len(job.candidates),
                "state": "running" if final is None else _state(final),
                "created": round(created, 3), "took_s": took,
                "cands": [cand_view(c, job) for c in job.everyone()], "final": final}

    def _add(self, event: dict[str, Any]) -> None:
        self.pending.append(event)

    def _wall(self, mono: float, now: float) -> float:
        """A monotonic time as wall time: `now` is the monotonic time of this moment."""
        return self.clock() - (now - mono)


def cand_view(cand: Candidate, job: Job, with_text: bool = True) -> dict[str, Any]:
    text = cand.text if with_text and cand.state != PENDING else ""
    return {"cand": cand.index, "peer": cand.peer, "state": cand.state, "text": text,
            "tokens": cand.tokens,
            "ttft_s": _round(cand.ttft_s), "latency_s": _round(cand.latency_s),
            "attempts": cand.attempts, "error": cand.error, "judge": cand is job.judge}


def _state(final: dict[str, Any]) -> str:
    return "done" if "winner" in final else "failed"


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
