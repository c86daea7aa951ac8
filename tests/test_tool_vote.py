"""broker/tool_vote.py: the vote when tools are offered (pure), and the reader's bounds."""

from __future__ import annotations

import json

import pytest

from broker.tool_vote import MAX_CALL_CHARS, NoValidCall, Offer, count, read_calls
from broker.voting import Answer
from common.bodies import Sampling
from common.tool_calls import MAX_JSON_STARTS, ToolCall, parse_tool_calls

pytestmark = pytest.mark.timeout(10)


def tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


TOOLS = [tool("get_weather"), tool("get_time")]
WEATHER = ToolCall("get_weather", '{"city":"Paris","unit":"C"}')


def offer(**body) -> Offer | None:
    return Offer.of(Sampling.from_map({"prompt": "x", "tools": TOOLS, **body}))


def answers(*texts: str, latency_s: float = 1.0) -> list[Answer]:
    return [Answer(i, t, latency_s) for i, t in enumerate(texts)]


def call(name: str = "get_weather", wrap: str = "bare", **args) -> str:
    args = args or {"city": "Paris", "unit": "C"}
    text = json.dumps({"name": name, "arguments": args})
    if wrap == "fence":
        return f"Sure.\n```json\n{text}\n```\n"
    if wrap == "tag":
        return f"<tool_call>{text}</tool_call>"
    if wrap == "openai":
        return json.dumps({"type": "function", "function": {"name": name,
                                                            "arguments": json.dumps(args)}})
    return text


# -- what is offered ----------------------------------------------------------------------
def test_no_offer_without_tools_or_with_tool_choice_none():
    assert Offer.of(Sampling.from_map({"prompt": "x"})) is None
    assert offer(tool_choice="none") is None


def test_offer_auto_required_and_one_named_tool():
    assert offer() == Offer(frozenset({"get_weather", "get_time"}), forced=False)
    assert offer(tool_choice="required") == Offer(frozenset({"get_weather", "get_time"}), True)
    assert offer(tool_name="get_time") == Offer(frozenset({"get_time"}), forced=True)


# -- the calls side -----------------------------------------------------------------------
def test_calls_vote_on_names_and_canonical_arguments_whatever_the_wrapping():
    # Given two calls of the same thing in different wrappings and key orders, and a third
    texts = (call(wrap="fence"), call("get_time", zone="UTC"),
             call(wrap="tag", unit="C", city="Paris"), call(wrap="openai"))
    v = count("similarity", answers(*texts), offer())
    # Then the three alike calls win, and the verdict carries the winner's parsed call
    assert v.winner == 0 and v.tool_calls == (WEATHER,)
    assert v.scores == {0: 0.75, 1: 0.25, 2: 0.75, 3: 0.75}
    assert v.calls[1] == (ToolCall("get_time", '{"zone":"UTC"}'),)
    assert v.method == "calls"


def test_calls_side_ties_go_to_the_more_reliable_then_the_faster():
    ballot = [Answer(0, call(city="Oslo"), 3.0, 0.5), Answer(1, call(city="Rome"), 2.0, 0.9),
              Answer(2, call(city="Oslo"), 1.0, 0.5), Answer(3, call(city="Rome"), 4.0, 0.9)]
    assert count("majority", ballot, offer()).winner == 1
    even = [Answer(0, call(city="Oslo"), 3.0), Answer(1, call(city="Rome"), 2.0)]
    assert count("majority", even, offer()).winner == 1


def test_first_is_the_fastest_valid_call_when_a_call_is_required():
    ballot = [Answer(0, "I cannot call tools.", 0.5), Answer(1, call(city="Rome"), 2.0),
              Answer(2, call(city="Oslo"), 1.0)]
    v = count("first", ballot, offer(tool_choice="required"))
    assert v.winner == 2 and v.tool_calls == (ToolCall("get_weather", '{"city":"Oslo"}'),)


# -- forced and auto ------------------------------------------------------------------------
def test_forced_only_valid_calls_are_eligible_even_against_a_text_majority():
    texts = ("It is sunny.", "It is sunny.", call(wrap="fence"))
    v = count("majority", answers(*texts), offer(tool_choice="required"))
    assert v.winner == 2 and v.tool_calls == (WEATHER,)


def test_forced_with_no_valid_call_fails_naming_the_tools():
    # a call of a tool that was not the named one is not valid either
    texts = ("It is sunny.", call("get_time"), '{"name": "get_weather", "arguments": 3}')
    with pytest.raises(NoValidCall) as e:
        count("majority", answers(*texts), offer(tool_name="get_weather"))
    assert str(e.value) == "none of the 3 answers was a valid call of get_weather"
    with pytest.raises(NoValidCall) as e:
        count("majority", answers("no"), offer(tool_choice="required"))
    assert str(e.value) == "none of the 1 answers was a valid call of get_time, get_weather"


def test_auto_calls_win_with_at_least_half_of_the_answers():
    v = count("similarity", answers("It is sunny.", call(), "", call(wrap="tag"), "Sunny!"),
              offer())
    assert v.tool_calls == (WEATHER,) and v.winner in (1, 3)


def test_auto_text_wins_with_fewer_than_half_calls_and_is_voted_as_usual():
    v = count("majority", answers("It is 4.", call(), "4"), offer())
    assert v.winner == 0 and v.tool_calls == ()
    assert v.calls == {0: (), 1: (WEATHER,), 2: ()}
    assert 1 not in v.scores  # the call is not a text answer: it cannot win the text side


def test_without_an_offer_the_vote_is_todays():
    v = count("majority", answers(call(), "4", "4"), None)
    assert v.winner == 1 and v.tool_calls == () and v.calls == {}


# -- bounded reading ----------------------------------------------------------------------
def test_a_text_over_the_limit_is_not_read_as_a_call():
    names = frozenset({"get_weather"})
    padded = call() + " " * MAX_CALL_CHARS
    assert parse_tool_calls(padded, set(names)) == (WEATHER,)
    assert read_calls(padded, names) == ()


@pytest.mark.parametrize("text", ["[" * 100_000, "[\n" * 50_000, "<tool_call>" + "[" * 100_000,
                                  '{"a":\n' * 20_000])
def test_deep_or_unclosed_json_is_no_call_not_an_exception(text):
    assert parse_tool_calls(text, {"get_weather"}) == ()


def test_line_starts_tried_for_a_json_value_are_capped(monkeypatch):
    # Given a text with many lines that each start a JSON value that is not one
    tries = []
    real = json.JSONDecoder.raw_decode

    def counting(self, s, idx=0):
        tries.append(idx)
        return real(self, s, idx)

    monkeypatch.setattr(json.JSONDecoder, "raw_decode", counting)
    assert parse_tool_calls("{oops\n" * 5000, {"get_weather"}) == ()
    # Then the reader gave up after a bounded number of tries, not one per line
    assert len(tries) <= MAX_JSON_STARTS + 2  # json.loads of the whole text uses it too
