"""The `generate` service: fan candidates out to slots, watch their timeouts, vote, reply.

Pure logic driven by the server loop: every method takes `now` (monotonic seconds) and
puts what must be sent into the Outbox. Every accepted job ends in exactly one FINAL,
sent by `_end`, the one place a job leaves `jobs`.

Placing, retrying and timing out candidates is dispatch.py's (the base); votes may go off-loop.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from broker import ballots, quorum, scheduler
from broker.ballots import Ballots
from broker.jobs import DONE, RUNNING, Candidate, Job, new_job
from broker.metrics import JOB_CANCELLED, JOB_FAILED, JOB_OK, MetricsBook
from broker.outbox import Outbox
from broker.peers import EVEN, Weights
from broker.policy import CANCEL_GRACE_S, MAX_TEXT_CHARS, Limits, TimeoutPolicy
from broker.registry import Registry, Slot
from broker.dispatch import CANCEL_GRACE, Dispatch, need_of, used_by
from broker.verdicts import BUSY, DEADLINE, NO_MODEL, NO_WORKER, SHUTTING_DOWN, error_map
from broker.voting import answer_key
from common import logs
from common.bodies import CONTEXT_LENGTH_EXCEEDED, ERROR_REQUEST, Chunk, GenerateRequest, Outcome
from common.codec import unpack_body
from common.errors import ProtocolError
from common.frames import SERVICE_GENERATE
from common.messages import WorkerReply

log = logging.getLogger(__name__)
MAX_NAME_SHOWN = 80  # characters of a client's model name quoted back to it
PRUNE_SLACK = 1024   # timers of ended jobs kept before they are pruned (and 8 per live one)


class GenerateService(Dispatch):
    def __init__(self, registry: Registry, metrics: MetricsBook, outbox: Outbox,
                 timeouts: TimeoutPolicy, voter=None, limits: Limits = Limits(),
                 cancel_grace_s: float = CANCEL_GRACE_S, journal=None,
                 weights: Weights = EVEN, watch=None):
        super().__init__(registry, metrics, outbox, timeouts, cancel_grace_s, watch)
        self.journal = journal  # journal(job, final body, outcome, now): each ended job, once
        self.ballots = Ballots(metrics, voter, weights)
        self.limits = limits
        self.by_client: dict[bytes, set[str]] = defaultdict(set)
        self.candidates = 0                     # of all jobs in `jobs`
        self.stats = {"busy": 0, "malformed_replies": 0, "stale_replies": 0}
        self.draining = False  # shutting down: running jobs go on, new ones are refused

    # -- client side -------------------------------------------------------------------
    def submit(self, client: bytes, delimited: bool, request: GenerateRequest, now: float) -> None:
        refusal = self._refusal(request)
        if refusal:
            self.outbox.error(client, delimited, SERVICE_GENERATE, refusal)
            return
        job = new_job(client, delimited, request, now, self.timeouts.default_s)
        self.jobs[job.id] = job
        self.by_client[client].add(job.id)
        self.candidates += len(job.candidates)
        self.timers.add(job.deadline, ("job", job.id))
        self.watch.accepted(job, now)
        log.info("job accepted: %d candidates, strategy %s", len(job.candidates),
                 request.strategy, extra=logs.kv(job=job.id))
        self._enqueue(job)
        self.dispatch(now)

    def _refusal(self, request: GenerateRequest) -> str | None:
        if self.draining:
            return f"{SHUTTING_DOWN}: try another broker, or again once it is back"
        if not self.registry.has(SERVICE_GENERATE):
            return f"{NO_WORKER}: start a swarm-worker"
        if not scheduler.Need(request.model).model_among(self.registry.models(SERVICE_GENERATE)):
            return f"{NO_MODEL} '{request.model[:MAX_NAME_SHOWN]}'"
        if len(self.jobs) >= self.limits.max_jobs or \
                self.candidates + request.candidates > self.limits.max_candidates:
            self.stats["busy"] += 1
            return (f"{BUSY} ({len(self.jobs)} jobs, {self.candidates} candidates "
                    "in flight): try again shortly")
        return None

    def cancel_client(self, client: bytes, now: float, job_id: str | None = None,
                      reason: str = "cancelled by the client") -> int:
        """End this client's jobs (or the one named): stop their candidates, one FINAL each."""
        ids = self.by_client.get(client, set())
        chosen = [j for j in ids if job_id is None or j == job_id]
        for jid in chosen:
            job = self.jobs[jid]
            self._stop_rest(job, now, reason)
            self._end(job, error_map(job, reason), now, JOB_CANCELLED)
        return len(chosen)

    # -- shutting down -------------------------------------------------------------------
    def drain(self) -> None:
        """Take no new jobs; the running ones go on (`drained` says when none is left)."""
        self.draining = True

    @property
    def drained(self) -> bool:
        return not self.jobs

    def fail_all(self, now: float, reason: str) -> int:
        """End every job still running with a FINAL that says why; returns how many."""
        jobs = list(self.jobs.values())
        for job in jobs:
            self._stop_rest(job, now, reason)
            self._end(job, error_map(job, f"{SHUTTING_DOWN}: {reason}"), now, JOB_FAILED)
        return len(jobs)

    # -- worker side -------------------------------------------------------------------
    def on_reply(self, slot: Slot, reply: WorkerReply, now: float) -> None:
        """A PARTIAL or FINAL from a slot that works for us; stale ones only free the slot."""
        assignment = slot.job
        if reply.final:
            slot.job = None
        job = self.jobs.get(assignment[0])
        cand = job.at(assignment[1]) if job else None
        if cand is None or cand.state != RUNNING or cand.slot != slot.identity:
            self.stats["stale_replies"] += 1
            if reply.final:
                self.dispatch(now)
            return  # the candidate already ended (timeout, cancel): nothing to record
        try:
            out = _parse(reply, job, cand)
        except ProtocolError as e:  # the peer's bad value fails its candidate, nothing else
            self.stats["malformed_replies"] += 1
            log.warning("bad reply: %s", e,
                        extra=logs.kv(job=job.id, cand=cand.index, peer=slot.peer))
            if not reply.final:
                self._cancel(job, cand, now)  # the slot stays busy until its FINAL comes
            self._fail(job, cand, f"{slot.peer} sent a malformed reply: {e}", now)
        else:
            if reply.final:
                self._final(job, cand, slot, out, now)
            else:
                self._partial(job, cand, out, now)
                return
        self._settle(job, now)
        self.dispatch(now)

    def _partial(self, job: Job, cand: Candidate, chunk: Chunk, now: float) -> None:
        if cand.first_token_at is None:
            cand.first_token_at = now
        if job.leader is None and job.request.stream == "live":
            job.leader = cand.index  # its tokens are what the client sees: it should win
        cand.tokens += chunk.tokens
        cand.chars += len(chunk.text)
        cand.parts.append(chunk.text)
        self._event(job, cand, "token", chunk.text)

    def _final(self, job: Job, cand: Candidate, slot: Slot, outcome: Outcome, now: float) -> None:
        if outcome.error is not None and outcome.error_code == CONTEXT_LENGTH_EXCEEDED:
            self._too_long(job, cand, slot, f"{slot.peer}: {outcome.error}", now)
            return
        if outcome.error is not None:
            ours = outcome.error_kind != ERROR_REQUEST  # the request's fault: no retry, no blame
            self._fail(job, cand, f"{slot.peer}: {outcome.error}", now, retry=ours, penalise=ours,
                       code=outcome.error_code)
            return
        if len(outcome.text) > MAX_TEXT_CHARS:
            self._fail(job, cand, f"{slot.peer} sent an answer over {MAX_TEXT_CHARS} characters", now)
            return
        cand.state, cand.outcome, cand.ended_at = DONE, outcome, now
        if cand.first_token_at is None:
            cand.first_token_at = now
        cand.tokens = cand.completion_tokens
        if quorum.applies(job) and cand is not job.judge:
            cand.key = answer_key(outcome.text, job.question)
        self.metrics.peer(slot.peer).succeeded(cand.latency_s, cand.ttft_s, cand.tokens,
                                                  cand.prompt_chars)
        self._event(job, cand, "done")

    def _too_long(self, job: Job, cand: Candidate, slot: Slot, error: str, now: float) -> None:
        """The prompt overflowed this slot's context: not the peer's fault. The candidate is
        retried only where a context is larger (or unknown), else it fails now, code kept."""
        cand.ctx_over = max(cand.ctx_over or 0, slot.profile.n_ctx)
        cand.tried.add(slot.identity)
        retry = scheduler.placeable(self.registry.serving(SERVICE_GENERATE), used_by(job, cand),
                                    cand.tried, need_of(job, cand))
        if not retry:
            error += " (no live slot has a larger context)"
        self._fail(job, cand, error, now, retry=retry, penalise=False,
                   code=CONTEXT_LENGTH_EXCEEDED)

    def on_slot_lost(self, slot: Slot, reason: str, now: float) -> None:
        if slot.job is not None:
            job_id, index = slot.job
            slot.job = None
            job = self.jobs.get(job_id)
            cand = job.at(index) if job is not None else None
            if cand is not None and cand.state == RUNNING and cand.slot == slot.identity:
                self._fail(job, cand, f"{slot.peer} {reason}", now)
                self._settle(job, now)
        models = self.registry.models(SERVICE_GENERATE)
        live = self.registry.has(SERVICE_GENERATE)
        if live and slot.profile.model in (models | {None, ""}):
            self.dispatch(now)  # every model still served: no job lost its last slot
            return
        for job in list(self.jobs.values()):  # nobody left for them: waiting helps no one
            if not live or not scheduler.Need(job.request.model).model_among(models):
                for cand in job.pending():
                    self._unplaceable(job, cand, now)
                self._settle(job, now)
        self.dispatch(now)

    # -- failure, timeouts, the end --------------------------------------------------------
    def tick(self, now: float) -> list[Slot]:
        """Act on due timers; returns the slots that ignored a CANCEL for the whole grace,
        for the server to disconnect (it owns the socket)."""
        overdue = []
        for key in self.timers.due(now):
            if key[0] == CANCEL_GRACE:
                if (slot := self.ignored_cancel(key)) is not None:
                    overdue.append(slot)
                continue
            job = self.jobs.get(key[1])
            if job is None or job.voting:
                continue
            if key[0] == "job":
                self._stop_rest(job, now, DEADLINE)
            else:
                self._expire(job, key, now)
            self._settle(job, now)
        self.collect_votes(now)
        self.dispatch(now)
        return overdue

    def _settle(self, job: Job, now: float) -> None:
        """End the job if the vote needs nothing more from it."""
        if job.voting or job.id not in self.jobs:
            return
        decided = ballots.decided(job, now, self.ballots.weights)
        if decided:
            self._stop_rest(job, now, decided)
        if job.finished and job.judge is None and now < job.deadline and \
                self.ballots.call_judge(job):
            self._enqueue(job)
            return
        if job.finished:
            body = self.ballots.start(job)
            if body is not None:
                self._end(job, body, now)
            else:
                self.collect_votes(now)

    def collect_votes(self, now: float) -> None:
        for job, body in self.ballots.ready(self.jobs):
            self._end(job, body, now)

    def _end(self, job: Job, body: dict, now: float, outcome: str | None = None) -> None:
        """The one way out of `jobs`: exactly one FINAL per accepted job."""
        if self.jobs.pop(job.id, None) is None:
            return
        outcome = outcome or (JOB_FAILED if "error" in body else JOB_OK)
        _log_end(job, body, outcome, now)
        self.metrics.jobs.end(outcome, now - job.created_at)
        self.ballots.drop(job.id)
        self.candidates -= len(job.candidates)
        if len(self.timers) > PRUNE_SLACK + 8 * (len(self.jobs) + self.candidates):
            # amortised: it at least halves; a cancel grace outlives its job on purpose
            self.timers.prune(lambda key: key[0] == CANCEL_GRACE or key[1] in self.jobs)
        ids = self.by_client.get(job.client)
        if ids is not None:
            ids.discard(job.id)
            if not ids:
                del self.by_client[job.client]
        self.outbox.reply(job.client, job.delimited, SERVICE_GENERATE, body, final=True)
        self.watch.ended(job, body, now)
        if self.journal is not None:
            self.journal(job, body, outcome, now)

    @property
    def busy(self) -> bool:
        """Votes are being counted elsewhere: the loop should look back soon."""
        return bool(self.ballots)


def _log_end(job: Job, body: dict, outcome: str, now: float) -> None:
    """One line a job: how it ended, and the winner's peer where there is one."""
    winner = body.get("winner") if isinstance(body.get("winner"), dict) else {}
    fields = logs.kv(job=job.id, outcome=outcome, peer=winner.get("peer"),
                     cand=winner.get("cand"), took_s=round(now - job.created_at, 3),
                     client=job.client.hex())
    if "error" in body:
        log.info("job ended: %s", body["error"], extra=fields)
    else:
        log.info("job ended: candidate %s won", winner.get("cand"), extra=fields)


def _parse(reply: WorkerReply, job: Job, cand: Candidate) -> Chunk | Outcome:
    body = unpack_body(reply.body)
    out = Outcome.from_map(body) if reply.final else Chunk.from_map(body)
    if (out.job, out.cand) != (job.id, cand.index):
        raise ProtocolError(f"the reply names job {out.job!r} candidate {out.cand}, but the slot "
                            f"works on job {job.id!r} candidate {cand.index}")
    if not reply.final and cand.chars + len(out.text) > MAX_TEXT_CHARS:
        raise ProtocolError(f"the answer grew over {MAX_TEXT_CHARS} characters")
    return out
