"""Voting strategies: pure functions from finished answers to a verdict.

majority    normalised exact answer, or the extracted final number/option, most common wins
similarity  medoid: the answer with the highest mean similarity to the others
weighted    similarity x peer reliability
first       the fastest valid answer
Ties go to the more reliable peer, then the faster answer, then the lower candidate index.

The work is bounded whatever the peers send: similarity compares a clipped copy of each
text (its head and its tail) and answer extraction reads only the tail, so a vote over 64
candidates of 400 KB costs about what one over short answers does.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from rapidfuzz import fuzz

from common.tool_calls import ToolCall


@dataclass(frozen=True, slots=True)
class Answer:
    cand: int
    text: str
    latency_s: float
    reliability: float = 1.0  # the peer's success rate so far, 0..1


@dataclass(frozen=True, slots=True)
class Verdict:
    winner: int                 # candidate index
    scores: dict[int, float]    # candidate index -> score under the strategy
    strategy: str
    tool_calls: tuple[ToolCall, ...] = ()   # the winner's calls; () when it answered in text
    calls: dict[int, tuple[ToolCall, ...]] = field(default_factory=dict)  # each answer's, if read


_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")
# "answer: b", "answer (c)" and "answer is C" are options; "the answer is a ..." is not
_OPTION = re.compile(r"(?i:answer(?: is)?|option)\s*"
                     r"(?:[:=]\s*\(?([A-Ea-e])\)?|\(([A-Ea-e])\)|([A-E]))(?!\w)")
_SPACE = re.compile(r"\s+")
CLIP_HEAD, CLIP_TAIL = 1536, 512   # characters of a text that similarity compares
KEY_TAIL = 4096                    # characters at the end where a final answer is looked for


def clip(text: str) -> str:
    """The head and tail of a long text: what similarity compares."""
    if len(text) <= CLIP_HEAD + CLIP_TAIL:
        return text
    return text[:CLIP_HEAD] + " " + text[-CLIP_TAIL:]


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip().strip(".!?;:,\"'`").strip().lower()


def answer_key(text: str) -> str:
    """What majority compares: an explicit option, else the final number, else the text."""
    text = text[-KEY_TAIL:]
    options = _OPTION.findall(text)
    if options:
        return f"option:{''.join(options[-1]).upper()}"
    numbers = _NUMBER.findall(text)
    if numbers:
        return "number:" + numbers[-1].replace(",", "")
    return "text:" + normalise(text)


def similarity(a: str, b: str) -> float:
    return fuzz.ratio(normalise(clip(a)), normalise(clip(b))) / 100.0


def _tie_order(a: Answer) -> tuple[float, float, int]:
    return (-a.reliability, a.latency_s, a.cand)


def best(answers: list[Answer], scores: dict[int, float]) -> int:
    return min(answers, key=lambda a: (-round(scores[a.cand], 9), *_tie_order(a))).cand


def majority(answers: list[Answer]) -> Verdict:
    keys = {a.cand: answer_key(a.text) for a in answers}
    groups: dict[str, int] = defaultdict(int)
    for key in keys.values():
        groups[key] += 1
    n = len(answers)
    scores = {a.cand: groups[keys[a.cand]] / n for a in answers}
    return Verdict(best(answers, scores), scores, "majority")


def medoid_scores(answers: list[Answer]) -> dict[int, float]:
    if len(answers) == 1:
        return {answers[0].cand: 1.0}
    totals = {a.cand: 0.0 for a in answers}
    texts = [(a.cand, normalise(clip(a.text))) for a in answers]
    for i, (ca, ta) in enumerate(texts):
        for cb, tb in texts[i + 1:]:
            s = fuzz.ratio(ta, tb) / 100.0
            totals[ca] += s
            totals[cb] += s
    return {c: t / (len(answers) - 1) for c, t in totals.items()}


def by_similarity(answers: list[Answer]) -> Verdict:
    scores = medoid_scores(answers)
    return Verdict(best(answers, scores), scores, "similarity")


def weighted(answers: list[Answer]) -> Verdict:
    base = medoid_scores(answers)
    scores = {a.cand: base[a.cand] * a.reliability for a in answers}
    return Verdict(best(answers, scores), scores, "weighted")


def first(answers: list[Answer]) -> Verdict:
    fastest = min(answers, key=lambda a: (a.latency_s, -a.reliability, a.cand))
    scores = {a.cand: 1.0 if a.cand == fastest.cand else 0.0 for a in answers}
    return Verdict(fastest.cand, scores, "first")


STRATEGY_FUNCS = {"majority": majority, "similarity": by_similarity,
                  "weighted": weighted, "first": first,
                  # placeholders until issue 8's strategies land
                  "auto": by_similarity, "confidence": majority, "judge": by_similarity}


def vote(strategy: str, answers: list[Answer]) -> Verdict:
    """Pick a winner among valid answers; non-empty text beats empty text."""
    if not answers:
        raise ValueError("vote needs at least one answer")
    nonempty = [a for a in answers if a.text.strip()]
    return STRATEGY_FUNCS[strategy](nonempty or answers)
