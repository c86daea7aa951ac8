"""Deadlines in a heap, so a tick costs what is due rather than a scan of every job.

Entries are never removed early: the caller checks that a due entry still means something
(the candidate is still on the same attempt, the job still exists) and ignores it if not.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: float, key: Hashable) -> None:
        heapq.heappush(self._heap, (when, next(self._order), key))

    def due(self, now: float) -> list[Hashable]:
        """Pop and return every key whose time has come, earliest first."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out
