"""Early quorum: a majority-style vote ends once its leader cannot be overtaken. Pure.

The leader's group must outweigh the runner-up's by more than the candidates still open
could add (a tie would go to reliability, so it must be strictly more). A done candidate
weighs its peer's weight (broker/peers.py); an open one may yet fail and be retried on any
peer, so it is counted at the heaviest weight there is. With every weight 1 that is a count. Under `auto` the answers so
far must also keep auto on majority whatever the open ones say: at least half of all the
answers that could be counted are already extracted.
What that saved is an estimate: each open candidate would have written about as many
tokens as the done ones, at its own pace; the wall time saved is the longest remainder.
"""

from __future__ import annotations

from collections import defaultdict

from broker.jobs import DONE, RUNNING, Job
from broker.peers import EVEN, Weights

MAJORITY_STYLE = ("majority", "auto")


def applies(job: Job) -> bool:
    request = job.request
    return (request.quorum and request.strategy in MAJORITY_STYLE
            and not request.sampling.calls_tools and len(job.candidates) > 2)


def reached(job: Job, weights: Weights = EVEN) -> bool:
    """Is the vote decided, whatever the candidates still open answer?"""
    done = [c for c in job.candidates if c.state == DONE and c.key is not None and c.text.strip()]
    open_ = sum(1 for c in job.candidates if not c.ended)
    if not open_ or not done:
        return False
    held: dict[str, float] = defaultdict(float)
    for c in done:
        held[c.key] += weights(c.peer)
    ranked = sorted(held.values(), reverse=True) + [0.0]
    if ranked[0] <= ranked[1] + open_ * weights.top:
        return False
    if job.request.strategy == "auto":
        extracted = sum(1 for c in done if not c.key.startswith("text:"))
        return 2 * extracted >= len(done) + open_
    return True


def saved_s(job: Job, now: float) -> float:
    """The estimated wall time that stopping the open candidates now saves: each would
    have written about as many tokens as the done ones did, at its own pace so far (one
    with no token yet: the done ones' mean latency, less its time so far)."""
    done = [c for c in job.candidates if c.state == DONE and c.latency_s is not None]
    if not done:
        return 0.0
    tokens = sum(c.tokens for c in done) / len(done)
    latency = sum(c.latency_s for c in done) / len(done)
    left = [0.0]
    for c in job.candidates:
        if c.ended:
            continue
        spent = now - c.started_at if c.state == RUNNING and c.started_at is not None else 0.0
        if c.tokens and spent > 0:
            left.append(max(tokens - c.tokens, 0.0) * spent / c.tokens)
        else:
            left.append(max(latency - spent, 0.0))
    return max(0.0, min(max(left), job.deadline - now))
