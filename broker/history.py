"""Recent jobs: what `swarm.history` answers, and what the broker keeps of each ended job.

Pure bookkeeping. A record keeps no text of the question or of any answer: the question is a
digest (the first DIGEST_HEX hex digits of the SHA-256 of the prompt or of the messages),
so two jobs can be told to be the same question without anyone reading it back.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import deque
from typing import Any

from broker.jobs import Candidate, Job
from common.bodies import MAX_CANDIDATES, Sampling
from common.codec import number, pack
from common.frames import MAX_BODY_BYTES

DEFAULT_HISTORY_SIZE = 1000  # jobs kept (swarm-broker --history-size)
MAX_HISTORY_SIZE = 1_000_000
DEFAULT_LIMIT = 20           # jobs a swarm.history request gets unless it names a limit
MAX_LIMIT = 1000             # the most one request gets
REPLY_BYTES = MAX_BODY_BYTES // 2  # and the most its records take, packed (1000 jobs of
                                   # 64 failed candidates would take ~40 MB)
MAX_ERROR_CHARS = 300        # of a candidate's or a job's error kept in a record
DIGEST_HEX = 16


def digest(sampling: Sampling) -> str:
    """The question's digest: the prompt, or the messages as canonical JSON."""
    if sampling.prompt is not None:
        data = sampling.prompt
    else:
        data = json.dumps(list(sampling.messages or ()), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_HEX]


def record(job: Job, body: dict[str, Any], outcome: str, now: float,
           wall: float | None = None) -> dict[str, Any]:
    """What is kept of a job that ended with this FINAL `body` at `now` (monotonic)."""
    wall = time.time() if wall is None else wall
    winner = body.get("winner") if isinstance(body.get("winner"), dict) else None
    vote = body.get("vote") if isinstance(body.get("vote"), dict) else {}
    return {
        "job": job.id,
        "at": round(wall, 3),                       # when it ended, wall clock (UNIX s)
        "question": digest(job.request.sampling),
        "strategy": job.request.strategy,
        "method": vote.get("method"),
        "outcome": outcome,
        "error": _short(body.get("error")),
        "winner": {"peer": winner.get("peer"), "cand": winner.get("cand")} if winner else None,
        "candidates": [_candidate(c) for c in job.candidates],
        "total_s": round(max(0.0, now - job.created_at), 4),
    }


def _candidate(cand: Candidate) -> dict[str, Any]:
    return {"cand": cand.index, "peer": cand.peer, "state": cand.state,
            "ok": cand.state == "done", "tokens": cand.completion_tokens,
            "ttft_s": _rounded(cand.ttft_s), "latency_s": _rounded(cand.latency_s),
            "error": _short(cand.error) if cand.state != "done" else None}


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _short(text: Any) -> str | None:
    return text[:MAX_ERROR_CHARS] if isinstance(text, str) else None


def limit_of(body: dict[str, Any]) -> int:
    """The `limit` a swarm.history request asks for; BodyError naming it if it is bad."""
    return number(body, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT, integer=True)


class History:
    """The most recent `size` job records, oldest first."""

    def __init__(self, size: int = DEFAULT_HISTORY_SIZE) -> None:
        if not 1 <= size <= MAX_HISTORY_SIZE:
            raise ValueError(f"a history keeps 1 to {MAX_HISTORY_SIZE} jobs, not {size}")
        self.size = size
        self._jobs: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, rec: dict[str, Any]) -> None:
        self._jobs.append(rec)

    def recent(self, limit: int, max_bytes: int = REPLY_BYTES) -> list[dict[str, Any]]:
        """Up to `limit` records, newest first, as many as fit in `max_bytes` packed (a
        reply always fits in one body)."""
        out, size = [], 0
        for rec in reversed(self._jobs):
            size += len(pack(rec))
            if len(out) >= limit or size > max_bytes:
                break
            out.append(rec)
        return out

    def __len__(self) -> int:
        return len(self._jobs)


_RECORD_KEYS = {"job", "at", "question", "strategy", "method", "outcome", "error", "winner",
                "candidates", "total_s"}
_CANDIDATE_KEYS = {"cand", "peer", "state", "ok", "tokens", "ttft_s", "latency_s", "error"}
MAX_KEPT_CHARS = 512  # of any text read back from disk (a peer's name is at most ~263)
MAX_KEPT_INT = 2**53  # msgpack cannot send an integer past 64 bits


def valid_record(rec: Any) -> bool:
    """Whether a record read back from disk is one `record` could have made (else it is
    skipped): its keys, and nothing in it that a reply could not send or that swells it."""
    if not isinstance(rec, dict) or rec.keys() != _RECORD_KEYS \
            or not isinstance(rec["job"], str):
        return False
    winner, cands = rec["winner"], rec["candidates"]
    return _finite(rec["at"]) and _finite(rec["total_s"]) \
        and all(_scalar(rec[k]) for k in _RECORD_KEYS - {"winner", "candidates"}) \
        and (winner is None or isinstance(winner, dict) and winner.keys() == {"peer", "cand"}
             and all(_scalar(v) for v in winner.values())) \
        and isinstance(cands, list) and len(cands) <= 2 * MAX_CANDIDATES \
        and all(isinstance(c, dict) and c.keys() == _CANDIDATE_KEYS
                and all(_scalar(v) for v in c.values()) for c in cands)


def _scalar(x: Any) -> bool:
    if x is None or isinstance(x, bool):
        return True
    if isinstance(x, int):
        return abs(x) <= MAX_KEPT_INT
    if isinstance(x, float):
        return math.isfinite(x)
    return isinstance(x, str) and len(x) <= MAX_KEPT_CHARS


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
