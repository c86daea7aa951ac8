"""A `generate` job and its candidates: pure state and the result the client receives."""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from broker.sampling_plan import plan, question_of
from common.bodies import GenerateRequest, Outcome, Sampling

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
ENDED = (DONE, FAILED, CANCELLED)


@dataclass(slots=True)
class Candidate:
    index: int
    seed: int
    state: str = PENDING
    slot: bytes | None = None
    peer: str | None = None
    attempts: int = 0
    tried: set[bytes] = field(default_factory=set)
    started_at: float | None = None
    first_token_at: float | None = None
    ended_at: float | None = None
    timeout_at: float = 0.0            # the peer's own timeout (not the job's deadline)
    first_token_by: float | None = None
    tokens: int = 0
    chars: int = 0                     # of text streamed so far
    parts: list[str] = field(default_factory=list)
    outcome: Outcome | None = None
    error: str | None = None
    error_code: str | None = None      # the peer's machine-readable code for `error`
    ctx_over: int | None = None        # its prompt overflowed a context this large (0: unknown)
    key: str | None = None             # what majority compares it on (early quorum reads it)
    sampling: Sampling | None = None   # its own sampling (temperature, the judge's prompt)
    prompt_chars: int = 0              # the size of what it reads first (its timeout scales)

    @property
    def text(self) -> str:
        return self.outcome.text if self.outcome is not None else "".join(self.parts)

    @property
    def latency_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @property
    def ttft_s(self) -> float | None:
        if self.started_at is None or self.first_token_at is None:
            return None
        return self.first_token_at - self.started_at

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def completion_tokens(self) -> int:
        usage = self.outcome.usage if self.outcome else {}
        return usage.get("completion_tokens", self.tokens)

    def restart(self) -> None:
        """Back to pending for one more try elsewhere; what the last try streamed is dropped,
        its error is kept so a final failure can still say what went wrong first."""
        self.state, self.slot, self.peer = PENDING, None, None
        self.started_at = self.first_token_at = self.ended_at = None
        self.tokens, self.chars, self.parts = 0, 0, []

    def to_map(self) -> dict[str, Any]:
        return {
            "cand": self.index,
            "peer": self.peer,
            "seed": self.seed,
            "state": self.state,
            "ok": self.state == DONE,
            "text": self.text if self.state == DONE else "",
            "error": self.error if self.state in (FAILED, CANCELLED) else None,
            "error_code": self.error_code if self.state == FAILED else None,
            "finish_reason": self.outcome.finish_reason if self.outcome else None,
            "latency_s": self.latency_s,
            "ttft_s": self.ttft_s,
            "tokens": self.completion_tokens,
            "attempts": self.attempts,
            # what sent it to another slot, when it was retried and then finished
            "retried_after": self.error if self.state == DONE and self.attempts > 1 else None,
            "tool_calls": [],  # the vote fills in the calls it read (verdicts.result_map)
            "logprob": self.outcome.logprob if self.outcome else None,
        }


@dataclass(slots=True)
class Job:
    id: str
    client: bytes
    delimited: bool
    request: GenerateRequest
    created_at: float
    deadline: float
    candidates: list[Candidate]
    slots_used: set[bytes] = field(default_factory=set)
    nodes_used: Counter = field(default_factory=Counter)
    started: int = 0             # candidate attempts started: fewer goes first in the rotation
    queued: bool = False         # in the dispatch rotation
    voting: bool = False         # every candidate ended; the vote is being counted
    leader: int | None = None    # stream "live" with strategy first: the candidate that spoke first
    question: str = ""           # the last user message (or the prompt): what answers answer
    judge: Candidate | None = None        # strategy judge: the extra candidate that picks
    judge_order: tuple[int, ...] = ()     # the candidates as numbered in the judge's prompt
    quorum_cancelled: int = 0    # candidates early quorum stopped
    quorum_saved_s: float = 0.0  # estimated seconds that saved

    def at(self, index: int) -> Candidate | None:
        """A candidate by index; the judge's index is the one after the last candidate."""
        if 0 <= index < len(self.candidates):
            return self.candidates[index]
        judge = self.judge
        return judge if judge is not None and judge.index == index else None

    def everyone(self) -> list[Candidate]:
        """The candidates and the judge, if one was called."""
        return self.candidates + ([self.judge] if self.judge is not None else [])

    @property
    def finished(self) -> bool:
        return all(c.ended for c in self.everyone())

    def pending(self) -> list[Candidate]:
        return [c for c in self.everyone() if c.state == PENDING]

    def next_pending(self) -> Candidate | None:
        return next((c for c in self.everyone() if c.state == PENDING), None)

    def done(self) -> list[Candidate]:
        return [c for c in self.candidates if c.state == DONE]


def new_job(client: bytes, delimited: bool, request: GenerateRequest, now: float,
            default_timeout_s: float) -> Job:
    """A job as accepted: an id, a deadline, each candidate with its seed and sampling."""
    base = request.seed if request.seed is not None else random.randrange(2**31)
    seeds = [(base + i) % 2**32 for i in range(request.candidates)]
    cands = [Candidate(i, seed, sampling=s)
             for i, (seed, s) in enumerate(zip(seeds, plan(request, seeds)))]
    return Job(os.urandom(6).hex(), client, delimited, request, now,
               now + (request.timeout_s or default_timeout_s), cands,
               question=question_of(request.sampling))
