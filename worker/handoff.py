"""Pieces from a slot's generation thread to the session's loop, paced.

Every piece handed over wakes the worker's loop, and the PARTIAL it becomes wakes the broker
and the client: on a machine whose cores the model keeps busy, those wake-ups are what the
swarm costs next to the model called directly. So the first piece goes at once (time to
first token is not touched), and after it pieces go at most once per `interval_s`: the ones
that came meanwhile go together, and the session joins them into one PARTIAL
(generation.coalesce). A piece waits at most `interval_s`, and no piece is held for a
token that comes later: the hand-over is a timer on the loop. The outcome goes at once,
after every piece before it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable

INTERVAL_S = 0.05  # 20 updates a second: smooth to read, a few tokens each at CPU speeds
MAX_STREAM_INTERVAL_S = 1.0  # a slower stream would read as a stall


class Handoff:
    def __init__(self, loop: asyncio.AbstractEventLoop, put: Callable[[object], None],
                 interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self._loop, self._put, self.interval_s, self._clock = loop, put, interval_s, clock
        self._lock = threading.Lock()
        self._held: list = []
        self._armed = False        # a hand-over is scheduled on the loop
        self._last = -math.inf     # when pieces were last handed over

    def piece(self, item: object) -> None:
        """From the generation thread: hand over now, or with the next scheduled hand-over.
        Raises RuntimeError once the loop is closed."""
        with self._lock:
            self._held.append(item)
            if self._armed:
                return
            self._armed = True
            delay = self._last + self.interval_s - self._clock()
        if delay <= 0:
            self._loop.call_soon_threadsafe(self._flush)
        else:
            self._loop.call_soon_threadsafe(self._loop.call_later, delay, self._flush)

    def final(self, item: object) -> None:
        """From the generation thread: every held piece, then `item`, at once."""
        self._loop.call_soon_threadsafe(self._flush, item)

    def _flush(self, last: object | None = None) -> None:
        """On the loop: everything held, in order (then `last`)."""
        with self._lock:
            held, self._held, self._armed = self._held, [], False
            if held:
                self._last = self._clock()
        for item in held:
            self._put(item)
        if last is not None:
            self._put(last)
