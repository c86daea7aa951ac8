"""OpenAI bodies to Swarm jobs and FINALs to OpenAI replies: the pure translation (issue 7)."""

from __future__ import annotations

import json

import pytest

from broker import openai_reply as R
from broker.openai_request import ApiError, chat_request, completion_request
from common.tool_calls import calls_key, parse_tool_calls

USER = {"role": "user", "content": "Weather in Paris?"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


def test_the_tool_history_becomes_messages_the_model_can_read():
    api = chat_request({"model": "swarm", "tools": [WEATHER], "messages": [
        {"role": "developer", "content": "Be brief."}, USER,
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "Sunny"}]}]})
    msgs = api.job.sampling.messages
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]
    # the assistant's call is written the way the model is asked to call, and reads back
    (call,) = parse_tool_calls(msgs[2]["content"], {"get_weather"})
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert msgs[3]["content"] == "Result of get_weather: Sunny"


def test_the_knobs_reach_the_job():
    api = chat_request({"model": "gemma", "messages": [USER], "max_completion_tokens": 7,
                        "temperature": 0.2, "top_p": 0.5, "seed": 2**40 + 5, "stop": "\n",
                        "n": 4, "stream": True, "stream_options": {"include_usage": True},
                        "user": "ignored", "parallel_tool_calls": True,
                        "swarm": {"candidates": 2, "strategy": "majority", "timeout_s": 9}})
    s, job = api.job.sampling, api.job
    assert (s.max_tokens, s.temperature, s.top_p, s.stop) == (7, 0.2, 0.5, ("\n",))
    assert job.seed == (2**40 + 5) % 2**31 and job.model == "gemma"
    assert job.candidates == 4  # n choices need n candidates
    assert (job.strategy, job.timeout_s, job.stream) == ("majority", 9, "winner")
    assert api.stream and api.include_usage and api.n == 4


def test_first_streams_live_and_a_forced_function_names_its_tool():
    api = chat_request({"messages": [USER], "stream": True, "swarm": {"strategy": "first"},
                        "tools": [WEATHER], "tool_choice": {"type": "function",
                                                            "function": {"name": "get_weather"}}})
    assert api.job.stream == "live" and api.model == "swarm"
    assert api.job.sampling.tool_name == "get_weather" and api.job.sampling.tool_choice == "required"
    with pytest.raises(ApiError, match="not among the tools"):
        chat_request({"messages": [USER], "tools": [WEATHER],
                      "tool_choice": {"type": "function", "function": {"name": "rm"}}})


@pytest.mark.parametrize("body, field", [
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": "a", "echo": True}, "echo"),
    ({"prompt": "a", "presence_penalty": 1}, "presence_penalty"),
    ({"prompt": "a", "response_format": {"type": "json_object"}}, "response_format"),
    ({"prompt": "a", "swarm": {"votes": 3}}, "swarm"),
    ({"prompt": "a", "model": ""}, "model"),
    ({"prompt": "a", "stream": "yes"}, "stream"),
])
def test_what_cannot_be_honoured_is_a_400_naming_it(body, field):
    with pytest.raises(ApiError) as err:
        completion_request(body)
    assert err.value.status == 400 and err.value.param == field


def final(*cands, winner=0, votes=None, **extra):
    return {"job": "j1", "strategy": "majority", "winner": {"cand": winner, "peer": "p0"},
            "candidates": [{"cand": i, "peer": f"p{i}", "ok": True, "tokens": 3, **c}
                           for i, c in enumerate(cands)],
            "votes": votes or {}, "usage": {"prompt_tokens": 10}, **extra}


def test_n_choices_are_the_best_voted_and_a_call_never_stays_in_the_content():
    call = [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]
    api = chat_request({"messages": [USER], "n": 2})
    body = R.completion(api, final({"text": "a"}, {"text": "{...}", "tool_calls": call},
                                   {"text": "c"}, winner=1,
                                   votes={"0": 0.2, "1": 0.9, "2": 0.5}), created=1)
    first, second = body["choices"]
    assert first["message"] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_j1_1_0", "type": "function", "function": call[0]}]}
    assert first["finish_reason"] == "tool_calls"
    assert second["message"]["content"] == "c"  # next best by vote
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}


@pytest.mark.parametrize("failure, status, code", [
    ({"error": "all 2 candidates failed: x", "error_code": "context_length_exceeded"}, 400,
     "context_length_exceeded"),
    ({"error": "all 1 candidates failed: job deadline reached",
      "candidates": [{"cand": 0, "error": "job deadline reached"}]}, 504, "deadline_exceeded"),
    ({"error": "no live worker serves model 'x'"}, 404, "model_not_found"),
    ({"error": "the broker is busy (3 jobs)"}, 503, "busy"),
    ({"error": "none of the 3 answers was a valid call of f"}, 502, "candidates_failed"),
])
def test_a_failed_job_is_the_right_openai_error(failure, status, code):
    err = R.job_error({"job": "j", "candidates": [], **failure})
    assert (err.status, err.code) == (status, code)


def test_headers_are_ascii_whatever_the_peer_is_called():
    headers = R.swarm_headers(final({"text": "a"}, votes={"0": 1.0}) |
                              {"winner": {"cand": 0, "peer": "café\nbox"}})
    assert headers["X-Swarm-Winner"] == "caf%C3%A9%0Abox"
    assert all(v.isascii() for v in headers.values())
    assert calls_key([]) == "[]"


# -- whatever a client sends: a 400 or a job, never a crash ------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from common.bodies import STRATEGIES, GenerateRequest  # noqa: E402

_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
_json = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=3) |
                     st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=12)
_keys = st.sampled_from(["model", "messages", "prompt", "max_tokens", "max_completion_tokens",
                         "temperature", "top_p", "seed", "stop", "n", "stream",
                         "stream_options", "tools", "tool_choice", "swarm", "logprobs",
                         "response_format", "echo", "best_of", "suffix", "presence_penalty"])
_plausible = st.integers(-3, 40000) | st.floats(-1, 3) | st.booleans() | st.none() | \
    st.lists(st.text(max_size=3), max_size=3) | _json
_role = st.sampled_from(["system", "user", "assistant", "tool", "developer"])
_message = st.fixed_dictionaries({"role": _role | _scalars, "content": st.text(max_size=8) |
                                  _json}, optional={"tool_calls": _json, "tool_call_id": _json})
_tools = st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.sampled_from(["f", "g", "bad name", ""])}, optional={"parameters": _json})}),
    max_size=2)
_choice = st.sampled_from(["auto", "none", "required", "any"]) | st.builds(
    lambda n: {"type": "function", "function": {"name": n}}, st.sampled_from(["f", "h"])) | _json
# mostly well-formed: a valid core, then a few fields plausible or junk
_bodies = st.builds(
    lambda core, extra: {**core, **extra},
    st.sampled_from([{"messages": [{"role": "user", "content": "hi"}]}, {"prompt": "hi"}]) |
    st.builds(lambda m: {"messages": m}, st.lists(_message, min_size=1, max_size=4)),
    st.dictionaries(_keys, _plausible, max_size=3) |
    st.fixed_dictionaries({}, optional={"tools": _tools, "tool_choice": _choice,
                                        "swarm": st.dictionaries(st.sampled_from(
                                            ["candidates", "strategy", "timeout_s",
                                             "temperature_spread", "greedy", "quorum",
                                             "shuffle_examples"]),
                                            _plausible | st.sampled_from(STRATEGIES)),
                                        "stream": st.booleans()}))


@settings(max_examples=400, deadline=None)
@given(body=_bodies, chat=st.booleans())
def test_any_body_is_a_job_or_a_400(body, chat):
    try:
        api = (chat_request if chat else completion_request)(body)
    except ApiError as e:
        assert e.status == 400 and e.message
        return
    # what passed is a job the broker's own checks accept as it is
    assert GenerateRequest.from_map(api.job.to_map()) == api.job


# -- issue 8: the per-job knobs and the explained vote -------------------------------------

def test_the_sampling_knobs_in_swarm_reach_the_job():
    api = chat_request({"messages": [USER], "top_p": 0.8, "swarm": {
        "temperature_spread": 0.5, "greedy": True, "quorum": False, "strategy": "confidence",
        "shuffle_examples": True}})
    job = api.job
    assert (job.spread, job.greedy, job.quorum, job.strategy) == (0.5, True, False, "confidence")
    assert job.shuffle
    assert job.sampling.top_p == 0.8
    plain = chat_request({"messages": [USER], "swarm": {"greedy": None}}).job
    assert (plain.spread, plain.greedy, plain.quorum) == (0.0, True, True)


@pytest.mark.parametrize("knobs, named", [
    ({"temperature_spread": 2.5}, "swarm.temperature_spread"),
    ({"temperature_spread": -0.1}, "swarm.temperature_spread"),
    ({"temperature_spread": "0.3"}, "swarm.temperature_spread"),
    ({"temperature_spread": True}, "swarm.temperature_spread"),
    ({"greedy": 1}, "swarm.greedy"),
    ({"greedy": "yes"}, "swarm.greedy"),
    ({"quorum": 0}, "swarm.quorum"),
    ({"quorum": [False]}, "swarm.quorum"),
    ({"shuffle_examples": "on"}, "swarm.shuffle_examples"),
])
def test_a_bad_knob_is_a_400_naming_it(knobs, named):
    with pytest.raises(ApiError) as err:
        chat_request({"messages": [USER], "swarm": knobs})
    assert err.value.status == 400 and err.value.param == "swarm"
    assert f"field '{named}'" in err.value.message and "unknown" not in err.value.message


def test_x_swarm_and_its_headers_explain_the_vote():
    vote = {"method": "majority", "reason": "2 of 3 candidates answered 4", "cancelled": 1,
            "saved_s": 0.8}
    f = final({"text": "4", "answer": "4", "group": 0, "score": 0.67, "agreed": [1],
               "logprob": -0.3},
              {"text": "It is 4", "answer": "4", "group": 0, "score": 0.67, "agreed": [0],
               "logprob": -0.5},
              {"text": "5", "answer": "5", "group": 1, "score": 0.33, "agreed": [],
               "logprob": None}, vote=vote, votes={"0": 0.67, "1": 0.67, "2": 0.33})
    x = R.x_swarm(f)
    assert x["vote"] == vote
    c0, _, c2 = x["candidates"]
    assert (c0["answer"], c0["group"], c0["score"], c0["agreed"], c0["logprob"]) == \
        ("4", 0, 0.67, [1], -0.3)
    assert (c2["answer"], c2["group"], c2["agreed"]) == ("5", 1, [])
    assert R.swarm_headers(f)["X-Swarm-Method"] == "majority"
    old = R.x_swarm(final({"text": "a"}, votes={"0": 1.0}))  # a FINAL before issue 8
    assert old["vote"] is None and old["candidates"][0]["score"] == 1.0
    assert old["candidates"][0]["answer"] is None
    assert "X-Swarm-Method" not in R.swarm_headers(final({"text": "a"}))
