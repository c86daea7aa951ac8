"""The vote when tools are offered: which answers called a tool, and which call wins.

It runs where the vote runs (the voter thread), on a snapshot of the answers. Each text is
read with `parse_tool_calls`; a text over MAX_CALL_CHARS is never read as a call, so the
work is bounded whatever a peer sends. A call read back is data: only what the parser
checked (an offered name, arguments that are a JSON object) is trusted.

forced  tool_choice "required" or a tool_name: only answers with a valid call are eligible;
        if none made one, the job fails (NoValidCall) naming the tools
auto    if at least half of the non-empty answers are calls, the calls side wins, else the
        text side, voted by the job's strategy as without tools
Calls side: majority on `calls_key` (names and canonical arguments), ties as in voting.py;
strategy `first` keeps its meaning: the fastest valid call.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from broker.judge import Judgement, judged
from broker.voting import Answer, Verdict, best, first, vote
from common.bodies import Sampling
from common.errors import SwarmError
from common.tool_calls import ToolCall, calls_key, parse_tool_calls, tool_names

MAX_CALL_CHARS = 256 * 1024  # a longer answer is text, never read as a call
NAMES_SHOWN = 5              # tools named in the error before "and N more"


class NoValidCall(SwarmError):
    """A tool call was required, and no answer made a valid one."""


@dataclass(frozen=True, slots=True)
class Offer:
    """The tools an answer may call, and whether it must."""

    names: frozenset[str]
    forced: bool

    @classmethod
    def of(cls, sampling: Sampling) -> "Offer | None":
        """None when no tool can be called: the vote is the one without tools."""
        if not sampling.calls_tools:
            return None
        names = {sampling.tool_name} if sampling.tool_name else tool_names(sampling.tools)
        return cls(frozenset(names), sampling.must_call)


def read_calls(text: str, names: frozenset[str]) -> tuple[ToolCall, ...]:
    if len(text) > MAX_CALL_CHARS:
        return ()
    return parse_tool_calls(text, set(names))


def count(strategy: str, answers: list[Answer], offer: Offer | None,
          question: str = "", judgement: Judgement | None = None) -> Verdict:
    """The verdict over the done answers, reading tool calls when tools are offered;
    strategy judge reads the judge's reply (judge.py)."""
    if offer is None:
        if strategy == "judge":
            return judged([a for a in answers if a.text.strip()] or answers, judgement, question)
        return vote(strategy, answers, question)
    calls = {a.cand: read_calls(a.text, offer.names) for a in answers}
    callers = [a for a in answers if calls[a.cand]]
    if offer.forced and not callers:
        raise NoValidCall(f"none of the {len(answers)} answers was a valid call of "
                          f"{_listed(offer.names)}")
    spoken = sum(1 for a in answers if a.text.strip())
    if callers and (offer.forced or 2 * len(callers) >= spoken):
        verdict = _calls_side(strategy, callers, calls, len(answers))
    else:
        verdict = vote(strategy, [a for a in answers if not calls[a.cand]], question)
    return replace(verdict, calls=calls)


def _calls_side(strategy: str, callers: list[Answer], calls: dict[int, tuple[ToolCall, ...]],
                total: int) -> Verdict:
    if strategy == "first":
        verdict = first(callers)
    else:
        keys = {a.cand: calls_key(calls[a.cand]) for a in callers}
        ids = {k: i for i, k in enumerate(dict.fromkeys(keys[a.cand] for a in callers))}
        groups = Counter(keys.values())
        scores = {a.cand: groups[keys[a.cand]] / total for a in callers}
        winner = best(callers, scores)
        agreed = {a.cand: tuple(b.cand for b in callers if b is not a and keys[b.cand] == keys[a.cand])
                  for a in callers}
        named = ", ".join(c.name for c in calls[winner])
        verdict = Verdict(winner, scores, "calls",
                          f"{groups[keys[winner]]} of {total} answers made the same call ({named})",
                          groups={c: ids[k] for c, k in keys.items()}, agreed=agreed)
    return replace(verdict, tool_calls=calls[verdict.winner])


def _listed(names: frozenset[str]) -> str:
    shown = sorted(names)[:NAMES_SHOWN]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")
