"""The `generate` service: fan candidates out to slots, watch their timeouts, vote, reply.

Pure logic driven by the server loop: every method takes `now` (monotonic seconds) and
puts what must be sent into the Outbox. Every accepted job ends in exactly one FINAL.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field

from broker import scheduler
from broker.jobs import DONE, FAILED, RUNNING, Candidate, Job
from broker.metrics import MetricsBook
from broker.outbox import Outbox
from broker.registry import Registry, Slot
from broker.voting import Answer, vote
from common.bodies import Chunk, GenerateRequest, Outcome, Task
from common.codec import pack, unpack_body
from common.errors import ProtocolError
from common.frames import SERVICE_GENERATE
from common.messages import Cancel, WorkerReply, WorkerRequest

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a failed candidate may be re-dispatched once elsewhere


@dataclass(slots=True)
class TimeoutPolicy:
    """Per-peer timeouts: peer override > worker hint > broker default."""

    default_s: float = 60.0
    first_token_s: float | None = None
    overrides: dict[str, float] = field(default_factory=dict)

    def total_s(self, slot: Slot) -> float:
        return self.overrides.get(slot.peer) or slot.profile.timeout_s or self.default_s


class GenerateService:
    def __init__(self, registry: Registry, metrics: MetricsBook, outbox: Outbox,
                 timeouts: TimeoutPolicy):
        self.registry, self.metrics, self.outbox, self.timeouts = registry, metrics, outbox, timeouts
        self.jobs: dict[str, Job] = {}

    # -- client side -------------------------------------------------------------------
    def submit(self, client: bytes, delimited: bool, request: GenerateRequest, now: float) -> None:
        if not self.registry.serving(SERVICE_GENERATE):
            self.outbox.error(client, delimited, SERVICE_GENERATE,
                              "no live worker serves 'generate': start a swarm-worker")
            return
        base = request.seed if request.seed is not None else random.randrange(2**31)
        job_id = os.urandom(6).hex()
        timeout_s = request.timeout_s or self.timeouts.default_s
        cands = [Candidate(i, (base + i) % 2**32) for i in range(request.candidates)]
        self.jobs[job_id] = Job(job_id, client, delimited, request, now, now + timeout_s, cands)
        log.info("job %s: %d candidates, strategy %s", job_id, len(cands), request.strategy)
        self.dispatch(now)

    def _event(self, job: Job, cand: Candidate, event: str, text: str = "") -> None:
        if job.request.stream == "winner":
            return
        body = {"event": event, "job": job.id, "cand": cand.index, "peer": cand.peer,
                "tokens": cand.tokens, "text": text}
        self.outbox.reply(job.client, job.delimited, SERVICE_GENERATE, body, final=False)

    # -- dispatch ----------------------------------------------------------------------
    def dispatch(self, now: float) -> None:
        idle = self.registry.idle(SERVICE_GENERATE)
        serving = self.registry.serving(SERVICE_GENERATE)
        for job in list(self.jobs.values()):
            for cand in job.pending():
                slot = scheduler.pick(idle, job.slots_used, job.nodes_used, cand.tried)
                if slot is not None:
                    idle.remove(slot)
                    self._start(job, cand, slot, now)
                elif not scheduler.placeable(serving, job.slots_used, cand.tried):
                    error = "no live worker slot can take this candidate"
                    if cand.error:  # it failed before: that is the news, not the lack of a retry
                        error = f"{cand.error} (no other slot could retry it)"
                    self._fail(job, cand, error, now, retry=False)
            self._maybe_finish(job)

    def _start(self, job: Job, cand: Candidate, slot: Slot, now: float) -> None:
        cand.state, cand.slot, cand.peer = RUNNING, slot.identity, slot.peer
        cand.attempts += 1
        cand.started_at = now
        cand.timeout_at = min(now + self.timeouts.total_s(slot), job.deadline)
        ft = self.timeouts.first_token_s
        cand.first_token_by = now + ft if ft else None
        job.slots_used.add(slot.identity)
        job.nodes_used[slot.node] += 1
        slot.job, slot.assigned_at = (job.id, cand.index), now
        task = Task(job.id, cand.index, cand.seed, job.request.sampling)
        self.outbox.send(slot.identity, slot.delimited, WorkerRequest(job.client, (pack(task.to_map()),)))
        self.metrics.peer(slot.peer).started()
        self._event(job, cand, "dispatched")

    # -- worker side -------------------------------------------------------------------
    def on_reply(self, slot: Slot, reply: WorkerReply, now: float) -> None:
        """A PARTIAL or FINAL from a slot that works for us; stale ones only free the slot."""
        if reply.final:
            assignment, slot.job = slot.job, None
        else:
            assignment = slot.job
        job_id, index = assignment
        job = self.jobs.get(job_id)
        cand = job.candidates[index] if job else None
        if cand is None or cand.state != RUNNING or cand.slot != slot.identity:
            if reply.final:
                self.dispatch(now)
            return  # the candidate already ended (timeout, cancel): nothing to record
        try:
            body = unpack_body(reply.body)
            if reply.final:
                self._final(job, cand, slot, Outcome.from_map(body), now)
            else:
                self._partial(job, cand, Chunk.from_map(body), now)
        except ProtocolError as e:
            log.warning("job %s cand %d: bad reply from %s: %s", job.id, index, slot.peer, e)
            if reply.final:
                self._fail(job, cand, f"malformed reply: {e}", now)
                self.dispatch(now)
            raise

    def _partial(self, job: Job, cand: Candidate, chunk: Chunk, now: float) -> None:
        if cand.first_token_at is None:
            cand.first_token_at = now
        cand.tokens += 1
        cand.parts.append(chunk.text)
        self._event(job, cand, "token", chunk.text)

    def _final(self, job: Job, cand: Candidate, slot: Slot, outcome: Outcome, now: float) -> None:
        if outcome.error is not None:
            self._fail(job, cand, f"{slot.peer}: {outcome.error}", now)
        else:
            cand.state, cand.outcome, cand.ended_at = DONE, outcome, now
            if cand.first_token_at is None:
                cand.first_token_at = now
            tokens = outcome.usage.get("completion_tokens", cand.tokens)
            cand.tokens = tokens
            self.metrics.peer(slot.peer).succeeded(cand.latency_s, cand.ttft_s, tokens)
            self._event(job, cand, "done")
        self._maybe_finish(job)
        self.dispatch(now)

    def on_slot_lost(self, slot: Slot, reason: str, now: float) -> None:
        if slot.job is None:
            return
        job_id, index = slot.job
        slot.job = None
        job = self.jobs.get(job_id)
        cand = job.candidates[index] if job is not None else None
        if cand is not None and cand.state == RUNNING and cand.slot == slot.identity:
            self._fail(job, cand, f"{slot.peer} {reason}", now)
            self._maybe_finish(job)
        self.dispatch(now)

    # -- failure, timeouts, the end --------------------------------------------------------
    def _fail(self, job: Job, cand: Candidate, error: str, now: float, retry: bool = True,
              timeout: bool = False) -> None:
        if cand.peer is not None:
            self.metrics.peer(cand.peer).failed(error, timeout)
        log.info("job %s cand %d failed: %s", job.id, cand.index, error)
        if cand.slot is not None:
            cand.tried.add(cand.slot)
        cand.error = error
        if retry and cand.attempts < MAX_ATTEMPTS and job.deadline - now > 0:
            self._event(job, cand, "retry", error)
            cand.restart()
            return
        cand.state, cand.ended_at = FAILED, now
        self._event(job, cand, "failed", error)

    def tick(self, now: float) -> None:
        for job in list(self.jobs.values()):
            for cand in job.running():
                late_first = cand.first_token_by is not None and cand.first_token_at is None \
                    and now >= cand.first_token_by
                if now >= cand.timeout_at or late_first:
                    what = "first token" if late_first and now < cand.timeout_at else "answer"
                    self._cancel(cand)
                    self._fail(job, cand, f"{cand.peer} timed out waiting for the {what}", now,
                               timeout=True)
            if now >= job.deadline:
                for cand in job.candidates:
                    if not cand.ended:
                        self._cancel(cand)
                        self._fail(job, cand, "job deadline reached", now, retry=False,
                                   timeout=True)
            self._maybe_finish(job)
        self.dispatch(now)

    def _cancel(self, cand: Candidate) -> None:
        """Ask the slot to stop; it stays busy until its FINAL arrives (MDP: one at a time)."""
        slot = self.registry.get(cand.slot) if cand.slot else None
        if slot is not None and slot.profile.cancel:
            self.outbox.send(slot.identity, slot.delimited, Cancel(self._job_client(slot)))

    def _job_client(self, slot: Slot) -> bytes:
        job = self.jobs.get(slot.job[0]) if slot.job else None
        return job.client if job else b""

    def _maybe_finish(self, job: Job) -> None:
        if job.id in self.jobs and job.finished:
            del self.jobs[job.id]
            self.outbox.reply(job.client, job.delimited, SERVICE_GENERATE, self._result(job),
                              final=True)

    def _result(self, job: Job) -> dict:
        cands = [c.to_map() for c in job.candidates]
        done = job.done()
        if not done:
            reasons = "; ".join(sorted({c.error or "failed" for c in job.candidates}))
            return {"job": job.id, "error": f"all {len(cands)} candidates failed: {reasons}",
                    "candidates": cands, "strategy": job.request.strategy}
        answers = [Answer(c.index, c.text, c.latency_s or 0.0,
                          self.metrics.peer(c.peer).reliability) for c in done]
        verdict = vote(job.request.strategy, answers)
        winner = job.candidates[verdict.winner]
        self.metrics.peer(winner.peer).wins += 1
        usage = winner.outcome.usage
        completion = sum(c.outcome.usage.get("completion_tokens", c.tokens) for c in done)
        prompt = usage.get("prompt_tokens", 0)
        return {
            "job": job.id,
            "strategy": verdict.strategy,
            "winner": {"cand": winner.index, "peer": winner.peer, "text": winner.text,
                       "finish_reason": winner.outcome.finish_reason},
            "candidates": cands,
            "votes": {str(k): round(v, 4) for k, v in verdict.scores.items()},
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }
