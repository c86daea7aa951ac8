"""Deadlines in a heap, so a tick costs what is due rather than a scan of every job.

Entries are not removed one by one: the caller checks that a due entry still means
something (the candidate is still on the same attempt, the job still exists) and ignores it
if not, and now and then `prune`s the ones that mean nothing any more, so entries of ended
jobs whose deadlines are far off (a day, at most) do not pile up.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable


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

    def prune(self, keep: Callable[[Hashable], bool]) -> None:
        """Drop every entry whose key `keep` rejects; O(n), so only now and then."""
        self._heap = [entry for entry in self._heap if keep(entry[2])]
        heapq.heapify(self._heap)
