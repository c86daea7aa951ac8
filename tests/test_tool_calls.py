"""Tool calls as text (common/tool_calls.py): reading calls back in every wrapping a model
uses, refusing what is not a call, bounded work on huge texts, the vote key, and the checks
on offered tools and on tool_choice / tool_name."""

from __future__ import annotations

import json

import pytest

from common.bodies import Sampling
from common.errors import BodyError
from common.tool_calls import (ToolCall, calls_key, calls_schema, check_tools, parse_tool_calls,
                               render_calls, tools_prompt)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
NAMES = {"get_weather", "get_time"}
PARIS = ToolCall("get_weather", '{"city":"Paris"}')


def parse(text: str) -> tuple[ToolCall, ...]:
    return parse_tool_calls(text, NAMES)


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    '  {"name":"get_weather","arguments":{"city":"Paris"}}\n',
    '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
    '```\n{"name": "get_weather", "arguments": {"city": "Paris"}}```',
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}',  # never closed
    '{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": '
    '\\"Paris\\"}"}}',
    '{"tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather",'
    ' "arguments": "{\\"city\\":\\"Paris\\"}"}}]}',
    '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
    '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    'Let me look that up.\n{"name": "get_weather", "arguments": {"city": "Paris"}}\nOne moment.',
    'Sure!\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\nDone.',
], ids=["bare", "bare, spaced", "fenced json", "fenced, closed on the line", "tagged",
        "tagged, unclosed", "openai shape", "openai tool_calls", "arguments as a string",
        "parameters", "prose around", "prose around a fence"])
def test_a_call_is_read_in_every_wrapping(text):
    assert parse(text) == (PARIS,)


def test_a_list_of_calls_and_several_tagged_calls_keep_their_order():
    listed = ('[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
              '{"name": "get_time", "arguments": {}}]')
    assert parse(listed) == (PARIS, ToolCall("get_time", "{}"))
    tagged = ('<tool_call>{"name": "get_time", "arguments": {}}</tool_call>\n'
              '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')
    assert parse(tagged) == (ToolCall("get_time", "{}"), PARIS)


def test_a_tag_holding_a_list_counts_every_call_in_it():
    text = ('<tool_call>[{"name": "get_time", "arguments": {}}, '
            '{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>')
    assert parse(text) == (ToolCall("get_time", "{}"), PARIS)


def test_arguments_are_canonical_json():
    call, = parse('{"name": "get_weather", "arguments": {"unit": "C",  "city": "Zürich"}}')
    assert call.arguments == '{"city":"Zürich","unit":"C"}'
    assert parse('{"name": "get_time"}') == (ToolCall("get_time", "{}"),)
    assert parse('{"name": "get_time", "arguments": ""}') == (ToolCall("get_time", "{}"),)


@pytest.mark.parametrize("text", [
    "Paris is sunny today.",
    "",
    '{"name": "get_stock", "arguments": {"symbol": "X"}}',       # not an offered tool
    '{"name": "get_weather", "arguments": ["Paris"]}',          # arguments not an object
    '{"name": "get_weather", "arguments": "Paris"}',            # a string that is no JSON object
    '{"name": "get_weather", "arguments": "[1, 2]"}',
    '{"name": "get_weather", "arguments": 3}',
    '{"name": ["get_weather"], "arguments": {}}',               # a name that is not a string
    '{"name": {"x": 1}, "arguments": {}}',
    '{"arguments": {"city": "Paris"}}',
    '[{"name": "get_weather", "arguments": {}}, {"name": "nope", "arguments": {}}]',
    '[]',
    '{"tool_calls": []}',
    '"get_weather"',
    'null',
    '{"name": "get_weather", "arguments": {"city": "Paris"}',   # cut short
], ids=["prose", "empty", "unknown name", "list arguments", "string arguments",
        "string list arguments", "number arguments", "list name", "map name", "no name",
        "one bad call of two", "empty list", "empty tool_calls", "a string", "null",
        "cut short"])
def test_what_is_not_a_valid_call_of_an_offered_tool_is_no_call(text):
    assert parse(text) == ()


def test_no_tools_offered_means_no_call():
    assert parse_tool_calls('{"name": "get_weather", "arguments": {}}', set()) == ()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [
    "{\n" * 1_000_000,                                  # a JSON start on every line, never closed
    "[1,\n" * 1_000_000,                                # each start parses on to the very end
    "[" * 4_000_000,                                    # nested deeper than any recursion limit
    "```\n" + " " * 4_000_000,                          # a fence that never closes, all blanks
    "<tool_call>" + " " * 4_000_000,                    # a tag that never closes, all blanks
    "```" + "a" * 4_000_000,                            # an endless language tag
    "\n" * 4_000_000,
    "```{}```\n" * 400_000,                             # many fences, none a call
    ("word " * 15 + "\n") * 50_000 + '{"name": "get_weather", "arguments": {"city": "Paris"}}',
], ids=["open braces", "open lists", "deep nesting", "unclosed fence", "unclosed tag",
        "endless tag", "newlines", "many fences", "a call after 4 MB of prose"])
def test_a_huge_text_is_read_in_bounded_work(text):
    # a quadratic reader would take hours on these 4 MB texts; the timeout catches it
    calls = parse(text)
    assert calls in ((), (PARIS,))
    if text.endswith("}}"):
        assert calls == (PARIS,)


def test_calls_key_ignores_argument_order_and_spacing_and_call_order():
    a = parse('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}')
    b = parse('```json\n{"arguments": {"unit":"C","city":"Paris"}, "name":"get_weather"}\n```')
    assert calls_key(a) == calls_key(b)
    time = ToolCall("get_time", "{}")
    assert calls_key([a[0], time]) == calls_key((time, a[0]))
    assert calls_key(a) != calls_key(parse('{"name": "get_weather", "arguments": '
                                           '{"city": "Lyon", "unit": "C"}}'))
    assert calls_key(a) != calls_key([a[0], time])


def test_rendered_calls_read_back_as_the_same_calls():
    calls = (PARIS, ToolCall("get_time", "{}"))
    assert parse(render_calls(calls)) == calls
    assert parse(render_calls(calls[:1])) == calls[:1]


def test_the_offer_lists_the_tools_and_says_when_to_call():
    tools = check_tools([WEATHER, TIME])
    auto = tools_prompt(tools)
    assert '"name": "get_weather"' in auto and '"name": "get_time"' in auto
    assert "otherwise answer in plain text" in auto
    assert "You must call one of the tools now." in tools_prompt(tools, "required")
    forced = tools_prompt(tools, "required", "get_time")
    assert "get_weather" not in forced and "You must call the tool 'get_time' now." in forced


def test_the_schema_fits_only_calls_of_offered_tools():
    tools = check_tools([WEATHER, TIME])
    one = calls_schema(tools, "get_weather")
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"] == WEATHER["function"]["parameters"]
    both = calls_schema(tools)
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["get_weather", "get_time"]


def test_check_tools_keeps_the_definitions_in_one_shape():
    tools = check_tools([WEATHER, {"function": {"name": "get_time"}}])
    assert tools[1] == {"type": "function", "function": {"name": "get_time", "description": "",
                                                         "parameters": {}}}
    assert json.loads(json.dumps(tools)) == list(tools)


@pytest.mark.parametrize("raw, words", [
    ({"type": "function"}, "field 'tools' must be a list"),
    (["get_weather"], "field 'tools[0]' must be"),
    ([{"type": "retrieval", "function": {"name": "x"}}], "field 'tools[0]' must be"),
    ([{"type": "function"}], "field 'tools[0]' must be"),
    ([{"function": {"name": "get weather"}}], "tools[0].function.name"),
    ([{"function": {"name": ""}}], "tools[0].function.name"),
    ([{"function": {"name": "x" * 65}}], "tools[0].function.name"),
    ([{"function": {"name": "get_weather\n"}}], "tools[0].function.name"),
    ([{"function": {"name": 7}}], "tools[0].function.name"),
    ([WEATHER, WEATHER], "names the function 'get_weather' twice"),
    ([{"function": {"name": "x", "parameters": []}}], "tools[0].function.parameters"),
    ([{"function": {"name": "x", "description": 1}}], "tools[0].function.description"),
    ([{"function": {"name": f"t{i}"}} for i in range(129)], "at most 128 tools"),
], ids=["not a list", "a string", "other type", "no function", "space in name", "empty name",
        "long name", "newline in name", "number name", "twice", "list parameters",
        "number description", "too many"])
def test_bad_tools_are_one_sentence_naming_the_field(raw, words):
    with pytest.raises(BodyError, match=words.replace("[", r"\[").replace("]", r"\]")) as e:
        check_tools(raw)
    assert e.value.field == "tools" and "\n" not in str(e.value)


def body(**extra) -> dict:
    return {"prompt": "Weather in Paris?", **extra}


def test_sampling_tool_choice_and_tool_name():
    s = Sampling.from_map(body(tools=[WEATHER, TIME]))
    assert (s.tool_choice, s.tool_name, s.calls_tools) == ("auto", None, True)
    s = Sampling.from_map(body(tools=[WEATHER], tool_choice="none"))
    assert not s.calls_tools
    s = Sampling.from_map(body(tools=[WEATHER, TIME], tool_name="get_time"))
    assert (s.tool_choice, s.tool_name) == ("required", "get_time")
    assert Sampling.from_map(s.to_map()) == s
    assert not Sampling.from_map(body()).calls_tools
    assert not Sampling.from_map(body(tools=[])).calls_tools


@pytest.mark.parametrize("extra, field, words", [
    ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice", "must be one of auto, none"),
    ({"tools": [WEATHER], "tool_choice": 1}, "tool_choice", "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice", "no tools are given"),
    ({"tools": [], "tool_choice": "required"}, "tool_choice", "no tools are given"),
    ({"tool_name": "get_weather"}, "tool_choice", "no tools are given"),
    ({"tools": [WEATHER], "tool_name": "get_time"}, "tool_name", "not among the tools"),
    ({"tools": [WEATHER], "tool_name": 3}, "tool_name", "tool_name"),
    ({"tools": [WEATHER], "tool_choice": "none", "tool_name": "get_weather"}, "tool_choice",
     "'none' cannot go with"),
    ({"tools": "get_weather"}, "tools", "must be a list"),
])
def test_bad_tool_choices_are_one_sentence_naming_the_field(extra, field, words):
    with pytest.raises(BodyError, match=words) as e:
        Sampling.from_map(body(**extra))
    assert e.value.field == field
