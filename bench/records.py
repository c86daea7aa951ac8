"""What synthetic workers started with `--record FILE` wrote (worker/synthetic.py): each
candidate's own generation time, and each slot's idle gap between two candidates."""

from __future__ import annotations

from pathlib import Path


def candidate_times(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Job id -> (own time in seconds, monotonic start) of each candidate that ran."""
    out: dict[str, list[tuple[float, float]]] = {}
    for parts in _lines(path):
        if parts[0] == "cand" and len(parts) == 5:
            out.setdefault(parts[1], []).append((float(parts[3]), float(parts[4])))
    return out


def gaps(path: Path) -> list[tuple[float, float]]:
    """(end of a candidate, start of the slot's next one), monotonic seconds."""
    return [(float(p[1]), float(p[2])) for p in _lines(path) if p[0] == "gap" and len(p) == 3]


def _lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]
