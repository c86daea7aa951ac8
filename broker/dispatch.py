"""Candidates on slots: placing them, failing and retrying them, timing them out, stopping
them. Pure logic, the base of GenerateService (generate.py), which adds the jobs' flow
(submit, replies, the vote, the FINAL) and says when a job is settled (`_settle`).

Costs follow what changed, not how much is queued: jobs with candidates to place wait in
a fair-share heap (the job that has started the fewest candidates goes first, then the
oldest, so a one-candidate job is not starved by a 64-candidate one) and timeouts sit in
a heap.
"""

from __future__ import annotations

import logging

from broker import scheduler
from broker.jobs import CANCELLED, FAILED, RUNNING, Candidate, Job
from broker.metrics import MetricsBook
from broker.outbox import Outbox
from broker.policy import CANCEL_GRACE_S, MAX_ATTEMPTS, TimeoutPolicy
from broker.registry import Registry, Slot
from broker.rotation import Rotation
from broker.sampling_plan import prompt_chars
from broker.timers import Timers
from broker.watch import Watch
from common import logs
from common.bodies import CONTEXT_LENGTH_EXCEEDED, Task
from common.codec import pack
from common.frames import SERVICE_GENERATE
from common.messages import Cancel, WorkerRequest

log = logging.getLogger(__name__)
CANCEL_GRACE = "cancel grace"  # the timer key of a slot told to stop


class Dispatch:
    def __init__(self, registry: Registry, metrics: MetricsBook, outbox: Outbox,
                 timeouts: TimeoutPolicy, cancel_grace_s: float = CANCEL_GRACE_S,
                 watch: Watch | None = None):
        self.registry, self.metrics, self.outbox, self.timeouts = registry, metrics, outbox, timeouts
        self.cancel_grace_s = cancel_grace_s
        self.watch = watch or Watch()  # the web page's events: nothing while nobody watches
        self.jobs: dict[str, Job] = {}
        self.rotation = Rotation()              # jobs with candidates waiting for a slot
        self.timers = Timers()

    def _settle(self, job: Job, now: float) -> None:
        raise NotImplementedError  # GenerateService: end the job if the vote needs no more

    def _event(self, job: Job, cand: Candidate, event: str, text: str = "") -> None:
        if self.watch.active:
            self.watch.cand(job, cand, event, text)
        if job.request.stream == "winner" or cand is job.judge:
            return
        body = {"event": event, "job": job.id, "cand": cand.index, "peer": cand.peer,
                "tokens": cand.tokens, "text": text}
        if event == "token":  # droppable, and merged with the candidate's waiting ones
            self.outbox.token(job.client, job.delimited, SERVICE_GENERATE, body)
        else:
            self.outbox.reply(job.client, job.delimited, SERVICE_GENERATE, body, final=False)

    # -- placing ------------------------------------------------------------------------
    def _enqueue(self, job: Job) -> None:
        if job.next_pending() is not None:
            self.rotation.push(job)

    def dispatch(self, now: float) -> None:
        """Place waiting candidates on idle slots, fewest-started job first."""
        if not self.rotation:
            return
        idle = self.registry.idle(SERVICE_GENERATE)
        known = _Learnt(self.registry)
        waiting: list[Job] = []  # placeable, but not on any slot idle now
        while idle and self.rotation:
            job = self.rotation.pop(self.jobs)
            if job is None or job.voting:
                continue
            cand = job.next_pending()
            if cand is None:
                continue
            need = need_of(job, cand)
            used = used_by(job, cand)
            slot = None if need in known.unmet else \
                scheduler.pick(idle, used, job.nodes_used, cand.tried, need)
            if slot is not None:
                idle.remove(slot)
                self._start(job, cand, slot, now)
                self._enqueue(job)  # a start changes no vote: nothing to settle
                continue
            if known.placeable(need, used, cand.tried):
                waiting.append(job)
                continue
            self._unplaceable(job, cand, now)
            self._enqueue(job)
            self._settle(job, now)
        for job in waiting:
            self._enqueue(job)

    def _unplaceable(self, job: Job, cand: Candidate, now: float) -> None:
        error = "no live worker slot can take this candidate"
        if cand.error:  # it failed before: that is the news, not the lack of a retry
            error = f"{cand.error} (no other slot could retry it)"
        self._fail(job, cand, error, now, retry=False, penalise=False, code=cand.error_code)

    def _start(self, job: Job, cand: Candidate, slot: Slot, now: float) -> None:
        cand.state, cand.slot, cand.peer = RUNNING, slot.identity, slot.peer
        cand.attempts += 1
        job.started += 1
        cand.started_at = now
        sampling = cand.sampling or job.request.sampling
        cand.prompt_chars = prompt_chars(sampling)
        timeout = self.timeouts.for_candidate(slot, sampling.max_tokens, self.metrics.peer(slot.peer),
                                              cand.prompt_chars)
        cand.timeout_at = now + timeout.s
        log.debug("candidate dispatched: timeout %.1f s (%s)", timeout.s, timeout.source,
                  extra=logs.kv(job=job.id, cand=cand.index, peer=slot.peer,
                                slot=slot.profile.slot))
        self.timers.add(cand.timeout_at, ("answer", job.id, cand.index, cand.attempts))
        ft = self.timeouts.first_token_s
        cand.first_token_by = now + ft if ft else None
        if ft:
            self.timers.add(cand.first_token_by, ("first token", job.id, cand.index, cand.attempts))
        job.slots_used.add(slot.identity)
        job.nodes_used[slot.node] += 1
        slot.job, slot.assigned_at = (job.id, cand.index), now
        task = Task(job.id, cand.index, cand.seed, sampling)
        self.outbox.send(slot.identity, slot.delimited, WorkerRequest(job.client, (pack(task.to_map()),)))
        self.metrics.peer(slot.peer).started()
        self._event(job, cand, "dispatched")

    # -- failure, timeouts, stopping ----------------------------------------------------
    def _fail(self, job: Job, cand: Candidate, error: str, now: float, retry: bool = True,
              timeout: bool = False, penalise: bool = True, code: str | None = None) -> None:
        if cand.peer is not None and penalise:
            self.metrics.peer(cand.peer).failed(error, timeout)
        elif cand.peer is not None:
            self.metrics.peer(cand.peer).request_errors += 1
        log.info("candidate failed: %s", error,
                 extra=logs.kv(job=job.id, cand=cand.index, peer=cand.peer))
        if cand.slot is not None:
            cand.tried.add(cand.slot)
        cand.error, cand.error_code = error, code
        # a context overflow moves on to a larger context each time: it is bounded by the
        # slots, and a retry that no slot can take ends in _unplaceable, with its code
        if retry and now < job.deadline and \
                (cand.attempts < MAX_ATTEMPTS or code == CONTEXT_LENGTH_EXCEEDED):
            self._event(job, cand, "retry", error)
            cand.restart()
            self._enqueue(job)
            return
        cand.state, cand.ended_at = FAILED, now
        self._event(job, cand, "failed", error)

    def _expire(self, job: Job, key: tuple, now: float) -> None:
        what, _, index, attempt = key
        cand = job.at(index)
        if cand is None or cand.state != RUNNING or cand.attempts != attempt or \
                (what == "first token" and cand.first_token_at is not None):
            return  # that attempt already moved on
        self._cancel(job, cand, now)
        self._fail(job, cand, f"{cand.peer} timed out waiting for the {what}", now, timeout=True)

    def _stop_rest(self, job: Job, now: float, reason: str) -> None:
        """End every candidate still pending or running, without blaming its peer."""
        for cand in job.everyone():
            if cand.ended:
                continue
            if cand.state == RUNNING:
                self._cancel(job, cand, now)
                self.metrics.peer(cand.peer).cancelled += 1
            cand.state, cand.ended_at, cand.error = CANCELLED, now, reason
            self._event(job, cand, "cancelled", reason)

    def _cancel(self, job: Job, cand: Candidate, now: float) -> None:
        """Ask the slot to stop; it stays busy until its FINAL arrives (MDP: one at a time),
        for at most the cancel grace: a slot still on it then is handed back to be
        disconnected (`ignored_cancel`), so a peer that ignores CANCEL cannot hold it."""
        slot = self.registry.get(cand.slot) if cand.slot else None
        if slot is not None and slot.profile.cancel:
            self.outbox.send(slot.identity, slot.delimited, Cancel(job.client))
            self.timers.add(now + self.cancel_grace_s,
                            (CANCEL_GRACE, job.id, cand.index, slot.identity, slot.assigned_at))

    def ignored_cancel(self, key: tuple) -> Slot | None:
        """The slot of a due cancel grace if it is still on the candidate it was told to
        stop (counted against its peer), else None: it sent its FINAL, or it is gone."""
        _, job_id, index, identity, assigned_at = key
        slot = self.registry.get(identity)
        if slot is None or slot.job != (job_id, index) or slot.assigned_at != assigned_at:
            return None
        self.metrics.peer(slot.peer).cancel_ignored += 1
        log.warning("worker still works %g s after CANCEL; disconnecting it", self.cancel_grace_s,
                    extra=logs.kv(job=job_id, cand=index, peer=slot.peer, slot=slot.profile.slot))
        return slot


class _Learnt:
    """What one dispatch pass learns about a need from a candidate with no history (no slot
    used or tried), whose fate is the need's alone, so that the jobs queued behind it with
    the same need cost no scan of the slots: no idle slot meets it (idle only shrinks during
    the pass), and whether any live slot does."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.unmet: set[scheduler.Need] = set()
        self._placeable: dict[scheduler.Need, bool] = {}
        self._serving: list[Slot] | None = None

    def placeable(self, need: scheduler.Need, used: set[bytes], tried: set[bytes]) -> bool:
        """After no idle slot took the candidate: could any live slot ever take it?"""
        fresh = not used and not tried
        if fresh:
            self.unmet.add(need)
            if need in self._placeable:
                return self._placeable[need]
        if self._serving is None:
            self._serving = self.registry.serving(SERVICE_GENERATE)
        answer = scheduler.placeable(self._serving, used, tried, need)
        if fresh:
            self._placeable[need] = answer
        return answer


def need_of(job: Job, cand: Candidate) -> scheduler.Need:
    return scheduler.Need(job.request.model, cand.ctx_over)


def used_by(job: Job, cand: Candidate) -> set[bytes]:
    """The slots a candidate should avoid as the job's own: none for the judge, which
    may read the answers on a slot that wrote one."""
    return set() if cand is job.judge else job.slots_used
