"""A finished job's vote: started on a snapshot, counted (maybe off the loop), made a FINAL.

Pure bookkeeping around the injected voter (a thread pool in the server, inline in
tests): `start` hands a job's answers to it, `ready` gives back the FINAL bodies of the
votes that are counted. Under strategy `first` a job is settled once an answer is in;
with a live stream (GenerateRequest.stream "live") the candidate that spoke first, whose
tokens the client has already seen, is waited for and wins if it answers.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

from broker import quorum
from broker.jobs import DONE, Candidate, Job
from broker.judge import Judgement, judge_sampling
from broker.metrics import MetricsBook
from broker.peers import EVEN, Weights
from broker.tool_vote import NoValidCall, Offer, count
from broker.verdicts import InlineVoter, all_failed, answers, error_map, result_map
from broker.voting import clip, normalise
from common import logs

log = logging.getLogger(__name__)


def first_is_in(job: Job) -> bool:
    """Strategy first has its answer (a call it must make waits for the vote to read it);
    a streamed leader still running is waited for."""
    if job.request.strategy != "first" or job.request.sampling.must_call:
        return False
    if job.leader is not None and not job.candidates[job.leader].ended:
        return False
    return any(c.text.strip() for c in job.done())


def _judgement(job: Job) -> Judgement | None:
    judge = job.judge
    if judge is None:
        return None
    text = judge.text if judge.state == DONE else None
    return Judgement(job.judge_order, text, judge.peer, judge.error)


def decided(job: Job, now: float, weights: Weights = EVEN) -> str | None:
    """Why the candidates still open can be stopped now, if they can: the first answer is
    in (strategy first), or early quorum (recorded on the job)."""
    if first_is_in(job):
        return "the first answer won"
    if quorum.applies(job) and quorum.reached(job, weights):
        job.quorum_saved_s = quorum.saved_s(job, now)
        job.quorum_cancelled = sum(1 for c in job.candidates if not c.ended)
        return "early quorum: the vote was decided"
    return None


class Ballots:
    def __init__(self, metrics: MetricsBook, voter=None, weights: Weights = EVEN) -> None:
        self.metrics = metrics
        self.weights = weights  # each peer's weight in majority-style votes
        self.voter = voter or InlineVoter()
        self.votes: dict[str, Future] = {}

    def __bool__(self) -> bool:
        """Votes are being counted elsewhere."""
        return bool(self.votes)

    def call_judge(self, job: Job) -> bool:
        """Strategy judge with answers that differ: add the judge candidate to the job."""
        if job.request.strategy != "judge" or job.request.sampling.calls_tools:
            return False
        ballot = [a for a in answers(job, lambda peer: 1.0) if a.text.strip()]
        if len({normalise(clip(a.text)) for a in ballot}) < 2:
            return False  # nothing to choose between: the vote says so
        sampling, order = judge_sampling(job.question, ballot)
        job.judge = Candidate(len(job.candidates), job.candidates[0].seed, sampling=sampling)
        job.judge_order = order
        return True

    def start(self, job: Job) -> dict[str, Any] | None:
        """Count the vote of a job whose candidates all ended; a FINAL body at once if
        there is nothing to count (every candidate failed) or the vote cannot start."""
        if not job.done():
            return error_map(job, all_failed(job))
        job.voting = True
        try:
            ballot = answers(job, lambda peer: self.metrics.peer(peer).reliability, self.weights)
            if job.leader is not None and job.candidates[job.leader].state == DONE:
                ballot = [a for a in ballot if a.cand == job.leader]  # what was streamed wins
            self.votes[job.id] = self.voter.submit(count, job.request.strategy, ballot,
                                                   Offer.of(job.request.sampling), job.question,
                                                   _judgement(job))
        except Exception as e:  # never lose the FINAL, whatever went wrong
            log.exception("the vote could not start", extra=logs.kv(job=job.id))
            return error_map(job, f"the vote could not be counted: {e}")
        return None

    def ready(self, jobs: dict[str, Job]) -> list[tuple[Job, dict[str, Any]]]:
        """The jobs whose vote is counted, each with its FINAL body."""
        out = []
        for job_id in [j for j, f in self.votes.items() if f.done()]:
            future, job = self.votes.pop(job_id), jobs.get(job_id)
            if job is None:
                continue  # cancelled while it was counted
            try:
                verdict = future.result()
                body = result_map(job, verdict)
                self.metrics.peer(job.candidates[verdict.winner].peer or "").wins += 1
            except NoValidCall as e:  # the answers' fault, not the broker's: no traceback
                log.info("no valid tool call: %s", e, extra=logs.kv(job=job_id))
                body = error_map(job, str(e))
            except Exception as e:
                log.exception("the vote failed", extra=logs.kv(job=job_id))
                body = error_map(job, f"the vote could not be counted: {e}")
            out.append((job, body))
        return out

    def drop(self, job_id: str) -> None:
        self.votes.pop(job_id, None)
