"""Each candidate's sampling: diversity that feeds the vote. Pure.

A job may spread its candidates' temperatures evenly over temperature +- spread (clamped
to 0..2) and make candidate 0 greedy (temperature 0) among the sampled ones (the default:
the benchmark's vote gained 6 points with it, docs/consensus.md); seeds differ per
candidate anyway. With `shuffle_examples`, a chat whose last user message follows
worked examples (user, assistant turns) shows each candidate but the first those examples
in an order of its own (drawn from its seed): a prompt-order ensemble, whose candidates err
less alike than samples of one prompt do. Strategy `confidence` asks every worker for its answer's mean token
log-probability.
"""

from __future__ import annotations

import random
from dataclasses import replace

from common.bodies import GenerateRequest, Sampling

MAX_TEMPERATURE = 2.0


def temperatures(temperature: float, spread: float, n: int, greedy: bool) -> list[float]:
    """Each candidate's temperature; `greedy` makes candidate 0 greedy when there are others
    to sample (a lone candidate keeps the temperature asked for)."""
    greedy = greedy and n > 1
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


def plan(request: GenerateRequest, seeds: list[int]) -> list[Sampling]:
    """The sampling of each candidate, in candidate order (seeds: theirs)."""
    base = request.sampling
    if request.strategy == "confidence" and not base.logprobs:
        base = replace(base, logprobs=True)
    temps = temperatures(base.temperature, request.spread, request.candidates, request.greedy)
    out = [base if t == base.temperature else replace(base, temperature=t) for t in temps]
    if request.shuffle and base.messages:
        out = [s if i == 0 else replace(s, messages=shuffled(s.messages, seeds[i]))
               for i, s in enumerate(out)]
    return out


def shuffled(messages: tuple[dict[str, str], ...], seed: int) -> tuple[dict[str, str], ...]:
    """The example turns before the last user message in another order: the system
    messages first stay first, the question last; anything but plain (user, assistant)
    pairs in between is left as it is."""
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    body, last = messages[head:-1], messages[-1:]
    if not last or last[0]["role"] != "user" or len(body) < 4 or len(body) % 2 or any(
            m["role"] != ("user", "assistant")[i % 2] for i, m in enumerate(body)):
        return messages
    pairs = [body[i:i + 2] for i in range(0, len(body), 2)]
    random.Random(seed).shuffle(pairs)
    return messages[:head] + tuple(m for pair in pairs for m in pair) + last


def prompt_chars(sampling: Sampling) -> int:
    """How much a worker reads before its first token, in characters: the prompt or the
    messages' text, and the tools offered. What a peer's learned time to first token scales
    with (broker/adaptive.py)."""
    if sampling.prompt is not None:
        size = len(sampling.prompt)
    else:
        size = sum(len(str(m.get("content") or "")) for m in sampling.messages or ())
    return size + sum(len(str(tool)) for tool in sampling.tools or ())


def question_of(sampling: Sampling) -> str:
    """What the answers answer: the last user message, or the prompt."""
    if sampling.prompt is not None:
        return sampling.prompt
    users = [m["content"] for m in sampling.messages or () if m["role"] == "user"]
    return users[-1] if users else ""
