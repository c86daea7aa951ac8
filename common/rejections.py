"""Rejected input counted by reason, with log lines that a flood cannot multiply.

Every rejection is counted; only the 1st, 2nd, 4th, 8th, ... of each reason is worth a log
line, so a peer that sends a million malformed messages costs about twenty lines, not a
million, and the counts (in `swarm.status` or the worker's log) still say how many.
"""

from __future__ import annotations

from collections import Counter


class Rejections:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str) -> bool:
        """Count one rejection; True when it is worth a log line."""
        self.counts[reason] += 1
        n = self.counts[reason]
        return n & (n - 1) == 0

    def __getitem__(self, reason: str) -> int:
        return self.counts[reason]

    def total(self) -> int:
        return sum(self.counts.values())

    def to_map(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def __str__(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items())) or "none"
