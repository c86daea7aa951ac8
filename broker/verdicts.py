"""A finished job's vote and the FINAL bodies the client receives: pure functions.

The vote itself may run off the socket loop (the server hands `vote` to a thread), so it
works on a snapshot of the answers, never on the live job.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from broker.jobs import DONE, FAILED, Job
from broker.peers import EVEN
from broker.voting import Answer, Verdict

# How a FINAL's error begins, by cause: spelled once, for clients that tell causes apart
# (the HTTP API's statuses)
NO_WORKER = "no live worker serves 'generate'"
NO_MODEL = "no live worker serves model"
BUSY = "the broker is busy"
BAD_REQUEST = "bad request"
SHUTTING_DOWN = "the broker is shutting down"
DEADLINE = "job deadline reached"   # a candidate's error when the job's deadline stopped it


def answers(job: Job, reliability: Callable[[str], float],
            weight: Callable[[str | None], float] = EVEN) -> list[Answer]:
    """A snapshot of the job's finished candidates, for a vote."""
    return [Answer(c.index, c.text, c.latency_s or 0.0, reliability(c.peer or ""),
                   c.outcome.logprob if c.outcome else None, weight(c.peer))
            for c in job.done()]


def result_map(job: Job, verdict: Verdict) -> dict[str, Any]:
    winner = job.candidates[verdict.winner]
    spent = [c for c in job.everyone() if c.state == DONE]
    completion = sum(c.completion_tokens for c in spent)
    prompt = winner.outcome.usage.get("prompt_tokens", 0) if winner.outcome else 0
    return {
        "job": job.id,
        "strategy": job.request.strategy,
        "winner": {"cand": winner.index, "peer": winner.peer, "text": winner.text,
                   "finish_reason": winner.outcome.finish_reason if winner.outcome else None,
                   "tool_calls": [c.to_map() for c in verdict.tool_calls]},
        "candidates": [_explained(c.to_map(), c.index, verdict) for c in job.candidates],
        "votes": {str(k): round(v, 4) for k, v in verdict.scores.items()},
        "vote": vote_map(job, verdict),
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }


def vote_map(job: Job, verdict: Verdict) -> dict[str, Any]:
    """How the vote went: what counted, why the winner won, what early quorum saved."""
    out = {"method": verdict.method, "reason": verdict.reason,
           "cancelled": job.quorum_cancelled, "saved_s": round(job.quorum_saved_s, 3)}
    judge = job.judge
    if judge is not None:
        out["judge"] = {"peer": judge.peer, "state": judge.state,
                        "text": judge.text if judge.state == DONE else "", "error": judge.error}
    return out


def _explained(cand: dict[str, Any], index: int, verdict: Verdict) -> dict[str, Any]:
    """A candidate's map with what the vote read of it."""
    score = verdict.scores.get(index)
    cand.update(tool_calls=[c.to_map() for c in verdict.calls.get(index, ())],
                answer=verdict.shown.get(index) or None, group=verdict.groups.get(index),
                score=None if score is None else round(score, 4),
                agreed=list(verdict.agreed.get(index, ())))
    return cand


def error_map(job: Job, error: str) -> dict[str, Any]:
    out = {"job": job.id, "error": error, "candidates": [c.to_map() for c in job.candidates],
           "strategy": job.request.strategy}
    codes = {c.error_code if c.state == FAILED else None for c in job.candidates}
    if len(codes) == 1 and None not in codes:  # every candidate failed for the same reason
        out["error_code"] = codes.pop()
    return out


def all_failed(job: Job) -> str:
    reasons = "; ".join(sorted({c.error or "failed" for c in job.candidates}))
    return f"all {len(job.candidates)} candidates failed: {reasons}"


class InlineVoter:
    """Counts a vote at once on the caller's thread (tests, and the fallback)."""

    def submit(self, fn: Callable[..., Verdict], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:  # the future carries it to the caller, like an executor's would
            future.set_exception(e)
        return future
