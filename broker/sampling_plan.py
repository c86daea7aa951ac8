"""Each candidate's sampling: diversity that feeds the vote. Pure.

A job may spread its candidates' temperatures evenly over temperature +- spread (clamped
to 0..2) and make candidate 0 greedy (temperature 0) among the sampled ones; seeds differ
per candidate anyway. Strategy `confidence` asks every worker for its answer's mean token
log-probability.
"""

from __future__ import annotations

from dataclasses import replace

from common.bodies import GenerateRequest, Sampling

MAX_TEMPERATURE = 2.0


def temperatures(temperature: float, spread: float, n: int, greedy: bool) -> list[float]:
    out = []
    sampled = n - 1 if greedy else n
    for i in range(n):
        if greedy and i == 0:
            out.append(0.0)
            continue
        j = i - 1 if greedy else i
        t = temperature
        if spread and sampled > 1:
            t = temperature - spread + 2 * spread * j / (sampled - 1)
        out.append(round(min(MAX_TEMPERATURE, max(0.0, t)), 4))
    return out


def plan(request: GenerateRequest) -> list[Sampling]:
    """The sampling of each candidate, in candidate order."""
    base = request.sampling
    if request.strategy == "confidence" and not base.logprobs:
        base = replace(base, logprobs=True)
    temps = temperatures(base.temperature, request.spread, request.candidates, request.greedy)
    return [base if t == base.temperature else replace(base, temperature=t) for t in temps]


def question_of(sampling: Sampling) -> str:
    """What the answers answer: the last user message, or the prompt."""
    if sampling.prompt is not None:
        return sampling.prompt
    users = [m["content"] for m in sampling.messages or () if m["role"] == "user"]
    return users[-1] if users else ""
