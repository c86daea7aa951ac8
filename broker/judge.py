"""Strategy `judge` (universal self-consistency): one worker reads the candidates and picks
the most consistent one. Pure: the prompt it is shown, and the verdict from its reply.

The judge's reply is peer data like any answer: only a candidate number in range is read;
anything else (no number, out of range, the judge failed or ran out of time) falls back
to similarity, and the verdict says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from broker.voting import Answer, Verdict, by_similarity, medoid_scores
from common.bodies import Sampling

JUDGE_ANSWER_CHARS = 600   # of each candidate shown to the judge: head and tail
JUDGE_QUESTION_CHARS = 2000
JUDGE_MAX_TOKENS = 8
READ_CHARS = 200           # of the judge's reply that is read
_PICK = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the judge candidate came back with."""

    order: tuple[int, ...]    # the candidates as numbered in its prompt (1-based there)
    text: str | None = None   # its reply; None when it gave none
    peer: str | None = None
    error: str | None = None  # why it gave no reply


def _shown(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + " ... " + text[-half:]


def judge_sampling(question: str, answers: list[Answer]) -> tuple[Sampling, tuple[int, ...]]:
    """The judge's task (greedy, a few tokens) and the order it numbers the answers in."""
    order = tuple(sorted(a.cand for a in answers))
    texts = {a.cand: a.text for a in answers}
    listed = "\n\n".join(f"Answer {i + 1}:\n{_shown(texts[c], JUDGE_ANSWER_CHARS)}"
                         for i, c in enumerate(order))
    prompt = (f"Question:\n{_shown(question, JUDGE_QUESTION_CHARS)}\n\n{listed}\n\n"
              f"Which answer is the most consistent with the others (the one the majority "
              f"agree with)? Reply with its number only, from 1 to {len(order)}.")
    messages = ({"role": "user", "content": prompt},)
    return Sampling(messages=messages, max_tokens=JUDGE_MAX_TOKENS, temperature=0.0), order


def read_pick(text: str, n: int) -> int | None:
    """The 1-based answer number the judge named, if it named one in range."""
    match = _PICK.search(text[:READ_CHARS])
    if match is None or len(match.group()) > 3:
        return None
    pick = int(match.group())
    return pick if 1 <= pick <= n else None


def judged(answers: list[Answer], judgement: Judgement | None, question: str = "") -> Verdict:
    """The judge's pick among the answers, or similarity when it made no usable one."""
    fallback = by_similarity(answers, question)
    if judgement is None:
        return replace(fallback, reason=f"too few answers to judge: {fallback.reason}")
    if judgement.text is None:
        why = f"the judge gave no reply ({judgement.error or 'no reason given'})"
        return replace(fallback, reason=f"{why}, so similarity: {fallback.reason}")
    eligible = [c for c in judgement.order if any(a.cand == c for a in answers)]
    pick = read_pick(judgement.text, len(judgement.order))
    if pick is None or judgement.order[pick - 1] not in eligible:
        quoted = repr(judgement.text.strip()[:40])
        return replace(fallback, reason=f"the judge's reply {quoted} named no answer, so "
                                        f"similarity: {fallback.reason}")
    winner = judgement.order[pick - 1]
    medoid = medoid_scores(answers)  # the rest in their similarity order, below the pick
    scores = {a.cand: 1.0 if a.cand == winner else 0.5 * medoid[a.cand] for a in answers}
    return Verdict(winner, scores, "judge",
                   f"the judge ({judgement.peer or 'a worker'}) picked answer {pick} of "
                   f"{len(judgement.order)}", groups=fallback.groups, agreed=fallback.agreed)
