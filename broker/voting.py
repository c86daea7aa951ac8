"""Voting strategies: pure functions from finished answers to an explained verdict.

majority    the extracted final answer (number, option, yes/no, short line; else the
            normalised text) most answers give
similarity  medoid: the answer with the highest mean similarity to the others
weighted    similarity x peer reliability
first       the fastest valid answer
confidence  majority weighted by a softmax of each answer's mean token log-probability
auto        majority where most answers are short and extractable, similarity otherwise
(judge, which needs a worker's reading, is in judge.py; tool calls in tool_vote.py.)
Ties go to the more reliable peer, then the faster answer, then the lower candidate index.

Every verdict explains itself: each answer's extracted answer, its group and who agreed
with it, and one line on why the winner won.

The work is bounded whatever the peers send: similarity compares a clipped copy of each
text (its head and its tail) and extraction reads a bounded part, so a vote over 64
candidates of 400 KB costs about what one over short answers does.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace

from rapidfuzz import fuzz

from broker.extract import extract
from common.tool_calls import ToolCall


@dataclass(frozen=True, slots=True)
class Answer:
    cand: int
    text: str
    latency_s: float
    reliability: float = 1.0       # the peer's success rate so far, 0..1
    logprob: float | None = None   # the mean token log-probability its worker reported
    weight: float = 1.0            # its peer's weight in majority-style votes (broker/peers.py)


@dataclass(frozen=True, slots=True)
class Verdict:
    winner: int                 # candidate index
    scores: dict[int, float]    # candidate index -> score under the method
    method: str                 # what counted: majority, similarity, ..., calls, judge
    reason: str = ""            # one line: why the winner won
    shown: dict[int, str] = field(default_factory=dict)   # each answer's extracted answer
    groups: dict[int, int] = field(default_factory=dict)  # each answer's group (cluster) id
    agreed: dict[int, tuple[int, ...]] = field(default_factory=dict)  # who agreed with it
    tool_calls: tuple[ToolCall, ...] = ()   # the winner's calls; () when it answered in text
    calls: dict[int, tuple[ToolCall, ...]] = field(default_factory=dict)  # each answer's, if read


_SPACE = re.compile(r"\s+")
CLIP_HEAD, CLIP_TAIL = 1536, 512   # characters of a text that similarity compares
TEXT_KEY_CHARS = 512               # of a normalised text that majority compares, unextracted
AGREE = 0.8                        # similarity at which two texts count as agreeing
CONFIDENCE_T = 1.0                 # softmax temperature over mean token log-probabilities
SHOWN_CHARS = 60                   # of an answer quoted in a reason


def clip(text: str) -> str:
    """The head and tail of a long text: what similarity compares."""
    if len(text) <= CLIP_HEAD + CLIP_TAIL:
        return text
    return text[:CLIP_HEAD] + " " + text[-CLIP_TAIL:]


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip().strip(".!?;:,\"'`").strip().lower()


def read_answer(text: str, question: str = "") -> tuple[str, str]:
    """What majority compares (the extracted answer's key, else the normalised, clipped
    text), and the answer as written ("" when none was extracted)."""
    found = extract(text, question)
    if found is not None:
        return found.key, found.shown
    return "text:" + normalise(clip(text))[:TEXT_KEY_CHARS], ""


def answer_key(text: str, question: str = "") -> str:
    return read_answer(text, question)[0]


def similarity(a: str, b: str) -> float:
    return fuzz.ratio(normalise(clip(a)), normalise(clip(b))) / 100.0


def _tie_order(a: Answer) -> tuple[float, float, int]:
    return (-a.reliability, a.latency_s, a.cand)


def best(answers: list[Answer], scores: dict[int, float]) -> int:
    return min(answers, key=lambda a: (-round(scores[a.cand], 9), *_tie_order(a))).cand


def _quote(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "...")


# -- majority-style: groups of equal answers ---------------------------------------------
@dataclass(frozen=True, slots=True)
class Groups:
    keys: dict[int, str]        # candidate -> what it is compared on
    shown: dict[int, str]       # candidate -> its extracted answer as written ("" if none)
    ids: dict[int, int]         # candidate -> group id, in order of first appearance
    members: dict[int, tuple[int, ...]]  # group id -> its candidates

    @property
    def extracted(self) -> int:
        return sum(1 for k in self.keys.values() if not k.startswith("text:"))

    def agreed(self) -> dict[int, tuple[int, ...]]:
        return {c: tuple(o for o in self.members[g] if o != c) for c, g in self.ids.items()}


def group(answers: list[Answer], question: str = "") -> Groups:
    keys, shown, ids, firsts = {}, {}, {}, {}
    members: dict[int, list[int]] = defaultdict(list)
    for a in sorted(answers, key=lambda a: a.cand):
        keys[a.cand], shown[a.cand] = read_answer(a.text, question)
        ids[a.cand] = firsts.setdefault(keys[a.cand], len(firsts))
        members[ids[a.cand]].append(a.cand)
    return Groups(keys, shown, ids, {g: tuple(m) for g, m in members.items()})


def _grouped_verdict(answers: list[Answer], groups: Groups, weights: dict[int, float],
                     method: str) -> tuple[Verdict, float]:
    """Each answer scores its group's share of the weight; the winner's share is returned."""
    total = sum(weights.values()) or 1.0
    share = defaultdict(float)
    for cand, g in groups.ids.items():
        share[g] += weights[cand] / total
    scores = {a.cand: share[groups.ids[a.cand]] for a in answers}
    winner = best(answers, scores)
    return Verdict(winner, scores, method, shown=groups.shown, groups=groups.ids,
                   agreed=groups.agreed()), scores[winner]


def _says(groups: Groups, winner: int, text: str) -> str:
    return groups.shown[winner] or _quote(text)


def _count_line(answers: list[Answer], groups: Groups, v: Verdict) -> str:
    n, members = len(answers), groups.members[groups.ids[v.winner]]
    text = next(a.text for a in answers if a.cand == v.winner)
    if any(a.weight != 1.0 for a in answers):
        held = sum(a.weight for a in answers if a.cand in members)
        return (f"{len(members)} of {n} answers say {_says(groups, v.winner, text)}, "
                f"weighing {held:g} of {sum(a.weight for a in answers):g} by peer weight")
    if len(members) == 1 and n > 1:
        return (f"no two of the {n} answers agreed; {_says(groups, v.winner, text)} won the "
                "tie on peer reliability, then speed")
    return f"{len(members)} of {n} answers say {_says(groups, v.winner, text)}"


def majority(answers: list[Answer], question: str = "", groups: Groups | None = None) -> Verdict:
    groups = groups or group(answers, question)
    v, _ = _grouped_verdict(answers, groups, {a.cand: a.weight for a in answers}, "majority")
    return _explained(v, _count_line(answers, groups, v))


def confidence_weights(answers: list[Answer]) -> dict[int, float] | None:
    """softmax(logprob / T) over the answers; an answer without one gets the lowest
    reported; None when no answer reported one."""
    known = [a.logprob for a in answers if a.logprob is not None]
    if not known:
        return None
    floor = min(known)
    z = {a.cand: (a.logprob if a.logprob is not None else floor) / CONFIDENCE_T for a in answers}
    top = max(z.values())
    return {c: math.exp(v - top) for c, v in z.items()}


def confidence(answers: list[Answer], question: str = "") -> Verdict:
    groups = group(answers, question)
    weights = confidence_weights(answers)
    if weights is None:
        v = majority(answers, question, groups)
        return _explained(v, f"no answer reported its confidence, so plain majority: {v.reason}",
                          "confidence")
    weights = {a.cand: weights[a.cand] * a.weight for a in answers}
    v, share = _grouped_verdict(answers, groups, weights, "confidence")
    return _explained(v, f"{_count_line(answers, groups, v)}, with {share:.0%} of the confidence")


# -- similarity-style: the medoid ----------------------------------------------------------
def _pairs(answers: list[Answer]) -> dict[tuple[int, int], float]:
    texts = [(a.cand, normalise(clip(a.text))) for a in answers]
    ratios: dict[tuple[str, str], float] = {}  # answers that agree word for word: once
    out = {}
    for i, (ca, ta) in enumerate(texts):
        for cb, tb in texts[i + 1:]:
            r = ratios.get((ta, tb))
            if r is None:
                r = ratios[ta, tb] = ratios[tb, ta] = fuzz.ratio(ta, tb) / 100.0
            out[ca, cb] = out[cb, ca] = r
    return out


def medoid_scores(answers: list[Answer], pairs: dict | None = None) -> dict[int, float]:
    if len(answers) == 1:
        return {answers[0].cand: 1.0}
    pairs = _pairs(answers) if pairs is None else pairs
    return {a.cand: sum(pairs[a.cand, b.cand] for b in answers if b is not a) /
            (len(answers) - 1) for a in answers}


def _clusters(answers: list[Answer], pairs: dict) -> tuple[dict[int, int], dict]:
    """Each answer joins the first cluster whose first member it is alike (>= AGREE)."""
    heads: list[int] = []
    ids = {}
    for a in sorted(answers, key=lambda a: a.cand):
        g = next((i for i, h in enumerate(heads) if pairs[a.cand, h] >= AGREE), None)
        if g is None:
            g, _ = len(heads), heads.append(a.cand)
        ids[a.cand] = g
    agreed = {a.cand: tuple(b.cand for b in answers if b is not a and pairs[a.cand, b.cand] >= AGREE)
              for a in answers}
    return ids, agreed


def _by_medoid(answers: list[Answer], method: str, weighted_by_reliability: bool) -> Verdict:
    pairs = _pairs(answers)
    base = medoid_scores(answers, pairs)
    scores = {a.cand: base[a.cand] * (a.reliability if weighted_by_reliability else 1.0)
              for a in answers}
    winner = best(answers, scores)
    ids, agreed = _clusters(answers, pairs) if len(answers) > 1 else ({winner: 0}, {winner: ()})
    alike = len(agreed[winner])
    reason = (f"closest to the others (mean similarity {base[winner]:.2f}); "
              f"{alike} of {len(answers) - 1} others alike")
    if len(answers) == 1:
        reason = "the only answer"
    elif weighted_by_reliability:
        reason += ", weighted by peer reliability"
    return Verdict(winner, scores, method, reason, groups=ids, agreed=agreed)


def by_similarity(answers: list[Answer], question: str = "") -> Verdict:
    return _by_medoid(answers, "similarity", False)


def weighted(answers: list[Answer], question: str = "") -> Verdict:
    return _by_medoid(answers, "weighted", True)


def first(answers: list[Answer], question: str = "") -> Verdict:
    fastest = min(answers, key=lambda a: (a.latency_s, -a.reliability, a.cand))
    scores = {a.cand: 1.0 if a.cand == fastest.cand else 0.0 for a in answers}
    return Verdict(fastest.cand, scores, "first",
                   f"the fastest answer ({fastest.latency_s:.2f} s)",
                   agreed={a.cand: () for a in answers})


def extractable(groups: Groups) -> bool:
    """auto's test: at least half of the answers gave a short, extractable answer."""
    return 2 * groups.extracted >= len(groups.ids)


def auto(answers: list[Answer], question: str = "") -> Verdict:
    groups = group(answers, question)
    if extractable(groups):
        v = majority(answers, question, groups)
        return _explained(v, f"auto chose majority (short answers): {v.reason}")
    v = by_similarity(answers, question)
    return _explained(v, f"auto chose similarity (free-form answers): {v.reason}")


def _explained(v: Verdict, reason: str, method: str | None = None) -> Verdict:
    return replace(v, reason=reason, method=method or v.method)


STRATEGY_FUNCS = {"majority": majority, "similarity": by_similarity, "weighted": weighted,
                  "first": first, "confidence": confidence, "auto": auto,
                  "judge": by_similarity}  # judge without a judgement: see judge.py


def vote(strategy: str, answers: list[Answer], question: str = "") -> Verdict:
    """Pick a winner among valid answers; non-empty text beats empty text."""
    if not answers:
        raise ValueError("vote needs at least one answer")
    nonempty = [a for a in answers if a.text.strip()]
    return STRATEGY_FUNCS[strategy](nonempty or answers, question)
