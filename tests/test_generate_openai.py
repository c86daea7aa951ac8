"""broker/generate.py for the OpenAI API, driven purely: the model name picks the slots,
context overflows move to larger contexts, and tool calls are voted on."""

from __future__ import annotations

import json

import pytest

from common.bodies import CONTEXT_LENGTH_EXCEEDED, ERROR_REQUEST, Outcome
from common.codec import pack
from common.messages import WorkerReply
from common.profile import WorkerProfile
from tests.test_generate_logic import CLIENT, Swarm, finals, tasks

pytestmark = pytest.mark.timeout(10)

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


def swarm(*slots: tuple[bytes, str, int]) -> Swarm:
    """slots: (identity, model, n_ctx); each its own node, taking several candidates."""
    s = Swarm()
    for identity, model, n_ctx in slots:
        name = identity.decode().upper()
        profile = WorkerProfile(name=name, node_id=name, model=model, n_ctx=n_ctx,
                                seed_variation=True)
        s.registry.add(identity, b"generate", profile, False, 0.0)
    return s


def overflow(s: Swarm, identity: bytes, now: float, n_ctx: int) -> None:
    """The slot answers as a worker does when the prompt does not fit its context."""
    job, cand = s.registry.get(identity).job
    out = Outcome(job, cand, error=f"prompt of 9000 tokens does not fit the context window "
                  f"of {n_ctx} tokens", error_kind=ERROR_REQUEST, error_code=CONTEXT_LENGTH_EXCEEDED)
    s.service.on_reply(s.registry.get(identity), WorkerReply(CLIENT, (pack(out.to_map()),), True),
                       now)


# -- the model name ------------------------------------------------------------------------
def test_a_model_name_sends_every_candidate_to_slots_of_that_model():
    s = swarm((b"q", "qwen", 0), (b"l", "llama", 0))
    s.submit(candidates=3, model="llama", quorum=False)
    assert [ident for ident, _ in tasks(s.sent())] == [b"l"]  # one slot: one at a time
    for now in (1.0, 2.0):
        s.reply(b"l", now)
        assert [ident for ident, _ in tasks(s.sent())] == [b"l"]
    s.reply(b"l", 3.0)
    (final,) = finals(s.sent())
    assert {c["peer"] for c in final["candidates"]} == {"L"}


@pytest.mark.parametrize("model", ["swarm", None])
def test_swarm_or_no_model_uses_every_slot(model):
    s = swarm((b"q", "qwen", 0), (b"l", "llama", 0))
    s.submit(candidates=2, **({"model": model} if model else {}))
    assert sorted(ident for ident, _ in tasks(s.sent())) == [b"l", b"q"]


def test_a_model_no_live_worker_serves_is_refused_at_once():
    s = swarm((b"q", "qwen", 0))
    s.submit(model="gemma")
    sent = s.sent()
    assert tasks(sent) == [] and not s.service.jobs
    assert finals(sent) == [{"error": "no live worker serves model 'gemma'"}]


def test_when_the_last_slot_of_a_model_goes_its_waiting_candidates_fail_at_once():
    # Given a llama job whose second candidate waits for the only llama slot
    s = swarm((b"q", "qwen", 0), (b"l", "llama", 0))
    s.submit(candidates=2, model="llama")
    s.sent()
    # When that slot is lost, while a qwen slot is still live and idle
    s.service.on_slot_lost(s.registry.remove(b"l"), "went silent", 1.0)
    # Then the job ends now instead of waiting for its deadline
    (final,) = finals(s.sent())
    assert [c["state"] for c in final["candidates"]] == ["failed", "failed"]
    assert "no live worker slot can take this candidate" in final["candidates"][1]["error"]


# -- context windows ---------------------------------------------------------------------
def test_an_overflow_is_retried_only_on_a_larger_context_and_not_held_against_the_peer():
    # Given slots with 2048, 4096 and 8192 tokens of context; the job starts on the smallest
    s = swarm((b"small", "m", 2048), (b"mid", "m", 4096), (b"big", "m", 8192))
    for ident in (b"mid", b"big"):
        s.registry.get(ident).job = ("other", 0)  # busy elsewhere
    s.submit(candidates=1)
    assert [ident for ident, _ in tasks(s.sent())] == [b"small"]
    s.registry.get(b"mid").job = None  # the 4096 slot is free now, the 8192 one is not
    # When the prompt overflows 2048
    overflow(s, b"small", 1.0, 2048)
    # Then it waits for a larger context, and the 4096 slot takes it, not the failing one
    assert [ident for ident, _ in tasks(s.sent())] == [b"mid"]
    assert s.metrics.peer("SMALL").failures == 0
    # And when 4096 overflows too, 8192 is next: beyond MAX_ATTEMPTS (2), one context at a time
    overflow(s, b"mid", 2.0, 4096)
    assert tasks(s.sent()) == []
    s.registry.get(b"big").job = None
    s.service.dispatch(3.0)
    assert [ident for ident, _ in tasks(s.sent())] == [b"big"]
    s.reply(b"big", 4.0, "done")
    (final,) = finals(s.sent())
    assert final["winner"]["text"] == "done" and final["candidates"][0]["attempts"] == 3
    assert s.metrics.peer("MID").failures == 0


def test_an_unknown_context_is_still_a_chance():
    s = swarm((b"known", "m", 2048), (b"unknown", "m", 0))
    s.registry.get(b"unknown").job = ("other", 0)
    s.submit(candidates=1)
    s.sent()
    overflow(s, b"known", 1.0, 2048)
    s.registry.get(b"unknown").job = None
    s.service.dispatch(2.0)
    assert [ident for ident, _ in tasks(s.sent())] == [b"unknown"]


def test_a_job_whose_every_candidate_overflows_ends_at_once_with_the_code():
    # Given two slots of 2048 and a larger one that does not serve the model asked for
    s = swarm((b"a", "m", 2048), (b"b", "m", 2048), (b"x", "other", 32768))
    s.submit(candidates=2, model="m", timeout_s=600)
    s.sent()
    overflow(s, b"a", 1.0, 2048)
    assert tasks(s.sent()) == []  # b has the same context: no retry there
    overflow(s, b"b", 1.5, 2048)
    (final,) = finals(s.sent())
    assert final["error_code"] == CONTEXT_LENGTH_EXCEEDED
    assert [c["error_code"] for c in final["candidates"]] == [CONTEXT_LENGTH_EXCEEDED] * 2
    assert "no live slot has a larger context" in final["candidates"][0]["error"]
    assert s.metrics.peer("A").failures == s.metrics.peer("B").failures == 0


def test_a_job_that_fails_for_mixed_reasons_has_no_single_code():
    s = swarm((b"a", "m", 2048), (b"b", "m", 2048))
    s.submit(candidates=2)
    s.sent()
    overflow(s, b"a", 1.0, 2048)
    s.reply(b"b", 1.5, error="out of memory")
    assert [ident for ident, _ in tasks(s.sent())] == [b"a"]  # a peer error: retried once
    s.reply(b"a", 2.0, error="out of memory")
    (final,) = finals(s.sent())
    assert "error_code" not in final
    assert [c["error_code"] for c in final["candidates"]] == [CONTEXT_LENGTH_EXCEEDED, None]


# -- tool calls --------------------------------------------------------------------------
def call(city: str, wrap: str = "") -> str:
    text = json.dumps({"name": "get_weather", "arguments": {"city": city}})
    return f"```json\n{text}\n```" if wrap == "fence" else text


def test_the_final_carries_the_winning_call_and_each_candidates_calls():
    s = swarm((b"a", "m", 0), (b"b", "m", 0), (b"c", "m", 0))
    s.submit(candidates=3, strategy="majority", tools=[WEATHER])
    s.sent()
    s.reply(b"a", 1.0, call("Oslo"))
    s.reply(b"b", 2.0, "I think it rains.")
    s.reply(b"c", 3.0, call("Oslo", "fence"))
    (final,) = finals(s.sent())
    oslo = [{"name": "get_weather", "arguments": '{"city":"Oslo"}'}]
    assert final["winner"]["tool_calls"] == oslo and final["winner"]["cand"] == 0
    assert [c["tool_calls"] for c in final["candidates"]] == [oslo, [], oslo]


def test_a_text_winner_has_no_tool_calls():
    s = swarm((b"a", "m", 0))
    s.submit(candidates=1, tools=[WEATHER], tool_choice="none")
    s.sent()
    s.reply(b"a", 1.0, call("Oslo"))
    (final,) = finals(s.sent())
    assert final["winner"]["tool_calls"] == [] and final["candidates"][0]["tool_calls"] == []


def test_a_required_call_that_nobody_made_fails_the_job_naming_the_tool():
    s = swarm((b"a", "m", 0), (b"b", "m", 0))
    s.submit(candidates=2, tools=[WEATHER], tool_choice="required")
    s.sent()
    s.reply(b"a", 1.0, "Sunny.")
    s.reply(b"b", 2.0, '{"name": "get_time", "arguments": {}}')
    (final,) = finals(s.sent())
    assert final["error"] == "none of the 2 answers was a valid call of get_weather"
    assert "winner" not in final


def test_first_with_a_required_call_is_not_won_by_a_faster_text():
    # Given strategy first, a required call, and a fast answer that is no call
    s = swarm((b"a", "m", 0), (b"b", "m", 0))
    s.submit(candidates=2, strategy="first", tools=[WEATHER], tool_name="get_weather")
    s.sent()
    s.reply(b"a", 1.0, "Sunny.")
    # Then the job goes on, and the slower valid call wins
    assert finals(s.sent()) == []
    s.reply(b"b", 2.0, call("Rome"))
    (final,) = finals(s.sent())
    assert final["winner"]["cand"] == 1
    assert final["winner"]["tool_calls"] == [{"name": "get_weather",
                                              "arguments": '{"city":"Rome"}'}]


def test_a_job_cut_by_its_deadline_after_an_overflow_has_no_code():
    # Given a candidate that overflowed and waits for the busy larger context
    s = swarm((b"small", "m", 2048), (b"big", "m", 8192))
    s.registry.get(b"big").job = ("other", 0)
    s.submit(candidates=1, timeout_s=10)
    s.sent()
    overflow(s, b"small", 1.0, 2048)
    # When the job's deadline passes before it could run again
    s.service.tick(10.0)
    (final,) = finals(s.sent())
    # Then the job did not end for the context: no code says so
    assert final["candidates"][0]["state"] == "cancelled"
    assert "error_code" not in final and final["candidates"][0]["error_code"] is None
