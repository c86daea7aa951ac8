"""The official `openai` client against a real swarm: swarm-broker --http, a real worker
and the bundled model (issue 7). One swarm for the module: the model loads once."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import Procs, free_port, wait_for_peers

pytestmark = [pytest.mark.model, pytest.mark.timeout(180)]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, model_path):
    procs = Procs(tmp_path_factory.mktemp("swarm"))
    port, http = free_port(), free_port()
    procs.broker(port, "--http", f"127.0.0.1:{http}", "--no-mdns")
    procs.worker(port, "w1", "--model", str(model_path), "--no-mdns", "--instances", "2")
    try:
        wait_for_peers(port, {"w1"}, timeout_s=120)
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="none",
                            max_retries=0, timeout=120)
    finally:
        procs.stop_all()


def test_a_chat_completion_from_the_real_model(swarm):
    raw = swarm.chat.completions.with_raw_response.create(
        model="swarm", messages=QUESTION, max_tokens=16, seed=7,
        extra_body={"swarm": {"candidates": 3}})
    reply = raw.parse()
    assert reply.object == "chat.completion" and reply.model == "swarm"
    assert reply.choices[0].message.role == "assistant"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    vote = reply.model_extra["x_swarm"]
    assert len(vote["candidates"]) == 3 and vote["winner"]["peer"] == "w1"
    assert raw.headers["x-swarm-winner"] == "w1"


def test_a_stream_reassembles_to_the_winner_of_the_same_job(swarm):
    """Seeded candidates are reproducible: the stream's content is one of the same seeds'
    candidates (which one wins a tie of two can turn on their latencies, which vary)."""
    ask = dict(model="swarm", messages=QUESTION, max_tokens=24, seed=11, temperature=0.8,
               extra_body={"swarm": {"candidates": 2}})
    texts = {c.message.content for c in swarm.chat.completions.create(n=2, **ask).choices}
    parts, finish, usage = [], None, None
    for chunk in swarm.chat.completions.create(stream=True,
                                               stream_options={"include_usage": True}, **ask):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts) in texts
    assert finish in ("stop", "length")
    assert usage is not None and usage.prompt_tokens > 0


def test_strategy_first_streams_tokens_live(swarm):
    stream = swarm.chat.completions.create(
        model="swarm", messages=[{"role": "user", "content": "Tell me a story about a fox."}],
        max_tokens=32, temperature=0.9, seed=3, stream=True,
        extra_body={"swarm": {"candidates": 2, "strategy": "first"}})
    pieces = [c.choices[0].delta.content for c in stream if c.choices and
              c.choices[0].delta.content]
    assert len(pieces) > 1  # token by token, not one block at the end


def test_a_forced_tool_call_comes_back_structured(swarm):
    reply = swarm.chat.completions.create(
        model="swarm", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=48, extra_body={"swarm": {"candidates": 3}})
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
    args = json.loads(choice.message.tool_calls[0].function.arguments)
    assert isinstance(args.get("city"), str)


def test_a_streamed_tool_call_arrives_as_tool_call_deltas(swarm):
    calls: dict[int, dict] = {}
    finish = None
    for chunk in swarm.chat.completions.create(
            model="swarm", messages=[{"role": "user", "content": "Weather in Rome?"}],
            tools=[WEATHER], tool_choice="required", max_tokens=48, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            assert not choice.delta.content  # never a call left in the content
            for d in choice.delta.tool_calls or ():
                call = calls.setdefault(d.index, {"name": "", "arguments": ""})
                call["name"] += d.function.name or ""
                call["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and "city" in json.loads(calls[0]["arguments"])


def test_the_tool_history_is_rendered_and_answered(swarm):
    reply = swarm.chat.completions.create(model="swarm", max_tokens=16, messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 21 C"}], tools=[WEATHER],
        tool_choice="none")
    assert isinstance(reply.choices[0].message.content, str)
    assert not reply.choices[0].message.tool_calls


def test_models_lists_swarm_and_the_worker_model(swarm):
    ids = [m.id for m in swarm.models.list().data]
    assert ids[0] == "swarm" and any(i.startswith("gemma-3-270m") for i in ids[1:])
    model = ids[1]  # the worker's own model id picks the workers serving it
    reply = swarm.completions.create(model=model, prompt="The capital of France is",
                                     max_tokens=8)
    assert reply.object == "text_completion" and isinstance(reply.choices[0].text, str)


def test_errors_reach_the_client_as_openai_exceptions(swarm):
    with pytest.raises(openai.NotFoundError):
        swarm.chat.completions.create(model="no-such-model", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        swarm.chat.completions.create(model="swarm", messages=QUESTION, temperature=5)
    with pytest.raises(openai.APIStatusError) as err:
        swarm.chat.completions.create(model="swarm", messages=QUESTION, max_tokens=200,
                                      extra_body={"swarm": {"timeout_s": 0.01}})
    assert err.value.status_code == 504


def test_a_prompt_longer_than_every_context_is_a_400(tmp_path, model_path):
    procs = Procs(tmp_path)
    port, http = free_port(), free_port()
    procs.broker(port, "--http", f"127.0.0.1:{http}", "--no-mdns")
    procs.worker(port, "small", "--model", str(model_path), "--no-mdns", "--n-ctx", "256")
    try:
        wait_for_peers(port, {"small"}, timeout_s=120)
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="x", max_retries=0)
        long = "Tell me about the sea. " * 200
        with pytest.raises(openai.BadRequestError) as err:
            api.chat.completions.create(model="swarm", max_tokens=8,
                                        messages=[{"role": "user", "content": long}])
        assert err.value.code == "context_length_exceeded"
    finally:
        procs.stop_all()
