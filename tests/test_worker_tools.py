"""The llama.cpp backend on the real bundled model: tools offered and forced calls, top_p,
and a prompt too long for the context, with its machine-readable error code."""

from __future__ import annotations

import json
import threading

import pytest

from common.bodies import CONTEXT_LENGTH_EXCEEDED, ERROR_REQUEST, Outcome, Sampling, Task
from common.tool_calls import parse_tool_calls
from worker.backend import LlamaCppBackend, call_grammar

pytestmark = pytest.mark.model

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time now.",
    "parameters": {"type": "object", "properties": {}}}}
NAMES = {"get_weather", "get_time"}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def llm(model_path):
    return LlamaCppBackend(model_path, n_ctx=2048)


def generate(backend, body: dict, seed: int = 1) -> Outcome:
    pieces: list[str] = []
    task = Task("j1", 0, seed, Sampling.from_map(body))
    outcome = backend.generate(task, pieces.append, threading.Event())
    assert outcome.error is None, outcome.error
    assert "".join(pieces) == outcome.text
    return outcome


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_forced_call_is_a_valid_call_even_from_the_270m_model(llm, seed):
    # Given a chat offering two tools, the answer forced to call get_weather
    body = {"messages": ASK, "tools": [WEATHER, TIME], "tool_name": "get_weather",
            "max_tokens": 64, "temperature": 0.8}
    # When the real model answers
    outcome = generate(llm, body, seed)
    # Then its text reads back as one call of get_weather with a string city
    calls = parse_tool_calls(outcome.text, NAMES)
    assert [c.name for c in calls] == ["get_weather"], outcome.text
    assert isinstance(json.loads(calls[0].arguments)["city"], str)


def test_required_forces_a_call_of_one_of_the_tools_after_a_raw_prompt(llm):
    body = {"prompt": "Question: what time is it?\nAnswer:", "tools": [WEATHER, TIME],
            "tool_choice": "required", "max_tokens": 64, "temperature": 0}
    calls = parse_tool_calls(generate(llm, body).text, NAMES)
    assert len(calls) == 1 and calls[0].name in NAMES


def test_tool_choice_none_offers_no_tools_and_gets_no_call(llm):
    plain = generate(llm, {"messages": ASK, "max_tokens": 24, "temperature": 0})
    none = generate(llm, {"messages": ASK, "tools": [WEATHER, TIME], "tool_choice": "none",
                          "max_tokens": 24, "temperature": 0})
    # the prompt is the plain one (no tools in it), and so is the answer: no call
    assert none.usage["prompt_tokens"] == plain.usage["prompt_tokens"]
    assert none.text == plain.text and parse_tool_calls(none.text, NAMES) == ()
    # while with tool_choice auto the tools are in the prompt
    auto = generate(llm, {"messages": ASK, "tools": [WEATHER, TIME], "max_tokens": 8,
                          "temperature": 0})
    assert auto.usage["prompt_tokens"] > plain.usage["prompt_tokens"] + 50


def test_top_p_reaches_llama_cpp(llm):
    # Given a hot sampling temperature and a fixed seed
    body = {"prompt": "Once upon a time", "max_tokens": 16, "temperature": 1.5}
    wide = generate(llm, {**body, "top_p": 1.0}, seed=5)
    narrow = generate(llm, {**body, "top_p": 0.01}, seed=5)
    greedy = generate(llm, {**body, "temperature": 0}, seed=5)
    # Then a tiny top_p leaves only the likeliest token: the greedy answer; 1.0 does not
    assert narrow.text == greedy.text
    assert wide.text != greedy.text


def test_a_prompt_longer_than_the_context_carries_its_error_code(model_path):
    small = LlamaCppBackend(model_path, n_ctx=256)
    task = Task("j1", 0, 1, Sampling(prompt="word " * 600, max_tokens=8))
    outcome = small.generate(task, lambda piece: None, threading.Event())
    assert (outcome.error_kind, outcome.error_code) == (ERROR_REQUEST, CONTEXT_LENGTH_EXCEEDED)
    assert "does not fit the context window of 256 tokens" in outcome.error
    # and the code travels in the FINAL body
    assert Outcome.from_map(outcome.to_map()).error_code == CONTEXT_LENGTH_EXCEEDED


def test_tools_that_make_a_prompt_too_long_are_the_requests_fault(model_path):
    small = LlamaCppBackend(model_path, n_ctx=256)
    many = [{"type": "function", "function": {"name": f"tool_{i}", "description": "x " * 40}}
            for i in range(12)]
    task = Task("j1", 0, 1, Sampling.from_map({"messages": ASK, "tools": many}))
    outcome = small.generate(task, lambda piece: None, threading.Event())
    assert outcome.error_code == CONTEXT_LENGTH_EXCEEDED


@pytest.mark.parametrize("schema", [
    {"$ref": "https://127.0.0.1:9/schema.json"},          # never fetched
    {"type": "object", "properties": {"a": {"type": "no such type"}}},
    {"type": "object", "properties": {'a"b': {"type": "string"}}},  # a grammar llama.cpp rejects
    {"$ref": "#/definitions/missing"},
], ids=["remote ref", "unknown type", "quote in a key", "dangling ref"])
def test_a_schema_that_makes_no_grammar_leaves_the_call_to_the_prompt(llm, schema, monkeypatch):
    try:  # llama-cpp-python's converter fetches https refs with requests
        import requests
        monkeypatch.setattr(requests, "get", lambda *a, **k: pytest.fail("a schema was fetched"))
    except ImportError:
        pass
    assert call_grammar(llm.llm, schema) is None


def test_a_tool_whose_schema_makes_no_grammar_is_still_served(llm):
    odd = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {'ci"ty': {"type": "string"}}}}}
    outcome = generate(llm, {"messages": ASK, "tools": [odd], "tool_choice": "required",
                             "max_tokens": 16, "temperature": 0})
    assert outcome.finish_reason in ("stop", "length")
