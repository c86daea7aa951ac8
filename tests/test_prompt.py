"""The chat transcript for base models: stops at role labels, strips a leading one."""

from __future__ import annotations

import pytest

from common.bodies import Sampling
from common.tool_calls import check_tools, tools_prompt
from worker.prompt import (AnswerFilter, LabelStripper, StopCutter, forced_call_schema,
                           offer_tools, prompt_and_stops, stops_for_chat, strip_label,
                           transcript)


def stream(pieces: list[str]) -> tuple[list[str], str]:
    """Feed pieces one by one: (what each feed passed on, the whole text passed on)."""
    stripper = LabelStripper()
    out = [stripper.feed(p) for p in pieces]
    return out, "".join(out) + stripper.finish()


def test_the_transcript_ends_on_the_assistant_label():
    text = transcript([{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": " Name three colours. "}])
    assert text == "System: Be brief.\nUser: Name three colours.\nAssistant:"


@pytest.mark.parametrize("label", ["User", "Assistant", "System", "Tool", "Human", "AI",
                                   "Customer", "Agent", "Student", "Q", "A"])
def test_generation_stops_at_any_role_label_that_starts_a_line(label):
    assert f"\n{label}:" in stops_for_chat([])


def test_the_user_stops_are_kept_once_after_the_turn_stops():
    stops = stops_for_chat(["END", "\nUser:"])
    assert stops[-1] == "END" and stops.count("\nUser:") == 1


@pytest.mark.parametrize("text, answer", [
    ("Assistant: Paris", "Paris"),
    (" Assistant: Paris is the capital.", "Paris is the capital."),
    ("Assistant: Assistant: Red, green and blue.", "Red, green and blue."),
    (" Customer: I want red.", "I want red."),
    ("A: 42", "42"),
    (" Paris", "Paris"),                       # no label: only the leading blank goes
    (" A red apple.", "A red apple."),         # "A" is a label only with its colon
    (" AI is a field of study.", "AI is a field of study."),
    ("Red, blue.\nUser: thanks", "Red, blue.\nUser: thanks"),  # later lines: the stops' job
    ("Assistant:", ""),
    (" Assis", "Assis"),                       # never became a label: given back at the end
])
def test_a_leading_label_is_stripped_and_nothing_else(text, answer):
    assert strip_label(text) == answer


def test_a_label_split_over_streamed_pieces_is_stripped():
    out, text = stream([" Ass", "ist", "ant", ":", " ", "Red", ", green", " and blue."])
    assert text == "Red, green and blue."
    assert out[:5] == ["", "", "", "", ""] and out[5] == "Red"


def test_only_what_could_still_be_a_label_is_held_back():
    out, text = stream([" A", " red", " apple"])
    assert out == ["", "A red", " apple"] and text == "A red apple"
    out, _ = stream([" Paris", " is", " big"])
    assert out == ["Paris", " is", " big"]  # plain answers stream with no delay


def test_after_the_answer_starts_a_label_passes_through():
    out, text = stream([" Hi", " Assistant: hi"])
    assert text == "Hi Assistant: hi"


def cut(stops: list[str], pieces: list[str]) -> tuple[list[str], str, bool]:
    """Feed pieces to a StopCutter: (what each feed passed on, the whole text, stopped)."""
    cutter = StopCutter(stops)
    out = [cutter.feed(p) for p in pieces]
    return out, "".join(out) + cutter.finish(), cutter.stopped


def test_a_stop_string_ends_the_text_before_it():
    out, text, stopped = cut(["END"], ["one two", " END three"])
    assert text == "one two " and stopped and out == ["one two", " "]


def test_a_stop_split_over_pieces_is_held_back_then_cut():
    out, text, stopped = cut(["\nUser:"], ["Red.", "\nUs", "er: more"])
    assert out == ["Red.", "", ""] and text == "Red." and stopped


def test_a_held_tail_that_never_becomes_a_stop_is_passed_on():
    out, text, stopped = cut(["\nUser:"], ["Red.\nU", "nder"])
    assert out == ["Red.", "\nUnder"] and text == "Red.\nUnder" and not stopped
    _, text, stopped = cut(["\nUser:"], ["Red.\nUs"])  # the text ends while held
    assert text == "Red.\nUs" and not stopped


def test_the_earliest_of_several_stops_wins_and_nothing_passes_after_it():
    cutter = StopCutter(["bb", "a"])
    assert cutter.feed("xxbbya") == "xx" and cutter.feed("more") == "" and cutter.finish() == ""


def test_an_answer_is_cut_at_its_stop_and_then_stripped_of_its_label():
    answer = AnswerFilter(stops_for_chat([]), strip_labels=True)
    out = [answer.feed(p) for p in [" Assis", "tant: Red", ", green.\nUs", "er: thanks"]]
    assert "".join(out) == "Red, green." and answer.stopped and answer.finish() == ""


def test_the_prompt_is_the_raw_text_or_the_transcript_with_its_turn_stops():
    assert prompt_and_stops(Sampling(prompt="Once", stop=("\n",))) == ("Once", ["\n"])
    text, stops = prompt_and_stops(Sampling(messages=({"role": "user", "content": "Hi"},)))
    assert text == "User: Hi\nAssistant:" and "\nUser:" in stops


# -- tools offered in the prompt -----------------------------------------------------------------
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time"}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def tools_sampling(**m) -> Sampling:
    return Sampling.from_map({"tools": [WEATHER, TIME], **m})


def test_tools_go_before_a_raw_prompt():
    s = offer_tools(tools_sampling(prompt="Weather in Paris:"))
    offer = tools_prompt(check_tools([WEATHER, TIME]))
    assert s.prompt == f"{offer}\n\nWeather in Paris:"


def test_tools_become_the_system_message_where_there_is_none():
    s = offer_tools(tools_sampling(messages=ASK, tool_choice="required"))
    offer = tools_prompt(check_tools([WEATHER, TIME]), "required")
    assert s.messages == ({"role": "system", "content": offer}, *ASK)
    text, _ = prompt_and_stops(s)
    assert text.startswith("System: You can use these tools:\n{") and text.endswith(
        "User: Weather in Paris?\nAssistant:")


def test_tools_go_at_the_front_of_the_system_message():
    s = offer_tools(tools_sampling(messages=[{"role": "system", "content": "Be brief."}, *ASK],
                                   tool_name="get_weather"))
    system = s.messages[0]["content"]
    assert system.startswith("You can use these tools:") and system.endswith("\n\nBe brief.")
    assert "You must call the tool 'get_weather' now." in system and '"get_time"' not in system
    assert s.messages[1:] == tuple(ASK)


@pytest.mark.parametrize("s", [
    Sampling.from_map({"messages": ASK, "tools": [WEATHER], "tool_choice": "none"}),
    Sampling.from_map({"prompt": "Hi"}),
    Sampling.from_map({"messages": ASK, "tools": []}),
], ids=["tool_choice none", "no tools", "an empty list of tools"])
def test_no_tools_or_tool_choice_none_leave_the_prompt_alone(s):
    assert offer_tools(s) == s and forced_call_schema(s) is None


def test_a_call_is_forced_only_by_required_or_a_tool_name():
    assert forced_call_schema(tools_sampling(messages=ASK)) is None
    both = forced_call_schema(tools_sampling(messages=ASK, tool_choice="required"))
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["get_weather",
                                                                        "get_time"]
    one = forced_call_schema(tools_sampling(messages=ASK, tool_name="get_weather"))
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"]["required"] == ["city"]
