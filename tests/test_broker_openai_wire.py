"""The broker's job logic for the OpenAI API on real loopback sockets, with scripted workers:
tool calls voted whatever their wrapping, the model name picking the peers, context windows."""

from __future__ import annotations

import asyncio
import json

import pytest

from common import frames as F
from common.bodies import CONTEXT_LENGTH_EXCEEDED, ERROR_REQUEST, Outcome, Task
from common.codec import pack, unpack
from common.messages import ClientRequest
from tests.conftest import run
from tests.wire import FakeWorker, body_of, client_final, dealer, running_broker, status

pytestmark = pytest.mark.timeout(60)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string"}}}}}


async def live(ctx, endpoint: str, count: int) -> None:
    """Wait until the broker lists `count` live peers (READY is on another socket)."""
    for _ in range(400):
        if sum(p["live"] for p in (await status(ctx, endpoint))["peers"]) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} workers never became live")


async def ask(ctx, endpoint: str, request: dict):
    client = dealer(ctx, endpoint)
    await client.send_multipart(ClientRequest(F.SERVICE_GENERATE, (pack(request),)).to_frames())
    return client


async def take(worker: FakeWorker) -> tuple[bytes, Task]:
    req = await worker.next()
    return req.client, Task.from_map(unpack(req.body[0]))


async def answer(worker: FakeWorker, text: str) -> Task:
    client, task = await take(worker)
    await worker.reply(client, Outcome(task.job, task.cand, text=text, finish_reason="stop").to_map(),
                       final=True)
    return task


async def overflow(worker: FakeWorker, n_ctx: int) -> None:
    client, task = await take(worker)
    out = Outcome(task.job, task.cand, error=f"prompt of 9000 tokens does not fit the context "
                  f"window of {n_ctx} tokens", error_kind=ERROR_REQUEST,
                  error_code=CONTEXT_LENGTH_EXCEEDED)
    await worker.reply(client, out.to_map(), final=True)


def test_tool_calls_in_different_wrappings_and_key_orders_are_one_vote(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            workers = [FakeWorker(ctx, broker.endpoint, f"w{i}", model="qwen") for i in range(4)]
            for w in workers:
                await w.ready()
            await live(ctx, broker.endpoint, 4)
            client = await ask(ctx, broker.endpoint, {
                "messages": [{"role": "user", "content": "Weather in Paris?"}], "candidates": 4,
                "strategy": "majority", "tools": [WEATHER], "stream": "winner", "max_tokens": 64})
            # Given four answers: the same call three ways (fence, tags, OpenAI's shape with
            # arguments as a string, keys in other orders) and one other call
            texts = ['Let me check.\n```json\n{"name": "get_weather", "arguments": '
                     '{"city": "Paris", "unit": "C"}}\n```',
                     '<tool_call>{"arguments": {"unit": "C", "city": "Paris"}, '
                     '"name": "get_weather"}</tool_call>',
                     json.dumps({"type": "function", "function": {
                         "name": "get_weather", "arguments": '{"unit":"C",  "city":"Paris"}'}}),
                     '{"name": "get_weather", "arguments": {"city": "Lyon"}}']
            for w in workers:  # each candidate answers its own text, whichever slot took it
                cl, task = await take(w)
                await w.reply(cl, Outcome(task.job, task.cand, text=texts[task.cand],
                                          finish_reason="stop").to_map(), final=True)
            _, final = await client_final(client)
            result = body_of(final)
            # Then the three alike calls won, as one canonical call
            paris = [{"name": "get_weather", "arguments": '{"city":"Paris","unit":"C"}'}]
            assert result["winner"]["tool_calls"] == paris
            assert result["winner"]["cand"] in (0, 1, 2)
            assert [c["tool_calls"] for c in result["candidates"]] == [
                paris, paris, paris, [{"name": "get_weather", "arguments": '{"city":"Lyon"}'}]]
            for s in [client] + [w.sock for w in workers]:
                s.close(linger=0)
    run(body())


def test_a_required_call_that_no_answer_made_fails_with_one_sentence(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "w1")
            await worker.ready()
            await live(ctx, broker.endpoint, 1)
            client = await ask(ctx, broker.endpoint, {
                "prompt": "Weather?", "candidates": 2, "tools": [WEATHER],
                "tool_choice": "required", "stream": "winner", "max_tokens": 8})
            await answer(worker, "It is sunny in Paris.")
            await answer(worker, '{"name": "get_time", "arguments": {}}')
            _, final = await client_final(client)
            assert body_of(final)["error"] == "none of the 2 answers was a valid call of get_weather"
            worker.close()
            client.close(linger=0)
    run(body())


def test_the_model_name_picks_the_workers_that_serve_it(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            qwen = FakeWorker(ctx, broker.endpoint, "q", model="qwen")
            llama = FakeWorker(ctx, broker.endpoint, "l", model="llama")
            for w in (qwen, llama):
                await w.ready()
            await live(ctx, broker.endpoint, 2)
            assert broker.registry.models(F.SERVICE_GENERATE) == {"qwen", "llama"}
            # a model nobody serves is refused at once
            client = await ask(ctx, broker.endpoint, {"prompt": "hi", "model": "gemma"})
            _, final = await client_final(client)
            assert body_of(final)["error"] == "no live worker serves model 'gemma'"
            client.close(linger=0)
            # both candidates of a llama job go to the llama worker, none to qwen
            client = await ask(ctx, broker.endpoint, {"prompt": "hi", "model": "llama",
                                                      "candidates": 2, "stream": "winner"})
            await answer(llama, "one")
            await answer(llama, "two")
            _, final = await client_final(client)
            assert {c["peer"] for c in body_of(final)["candidates"]} == {"l"}
            assert not await qwen.sock.poll(100)
            client.close(linger=0)
            for w in (qwen, llama):
                w.close()
    run(body())


def test_a_context_overflow_moves_to_a_larger_context_or_ends_with_its_code(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            small = FakeWorker(ctx, broker.endpoint, "small", n_ctx=2048)
            big = FakeWorker(ctx, broker.endpoint, "big", n_ctx=8192)
            for w in (small, big):
                await w.ready()
            await live(ctx, broker.endpoint, 2)
            # Given one candidate that lands on the small context and overflows it
            client = await ask(ctx, broker.endpoint, {"prompt": "long", "candidates": 2,
                                                      "stream": "winner"})
            await overflow(small, 2048)
            await answer(big, "one")       # its own candidate
            await answer(big, "two")       # the overflowed one, retried on the larger context
            _, final = await client_final(client)
            result = body_of(final)
            assert [c["ok"] for c in result["candidates"]] == [True, True]
            client.close(linger=0)
            # When every context overflows
            client = await ask(ctx, broker.endpoint, {"prompt": "longer", "candidates": 2,
                                                      "stream": "winner"})
            await overflow(small, 2048)
            await overflow(big, 8192)
            await overflow(big, 8192)
            # Then the job ends at once with the code on each candidate, no peer blamed
            _, final = await client_final(client)
            result = body_of(final)
            assert result["error_code"] == CONTEXT_LENGTH_EXCEEDED
            assert [c["error_code"] for c in result["candidates"]] == [CONTEXT_LENGTH_EXCEEDED] * 2
            peers = {p["name"]: p["metrics"] for p in (await status(ctx, broker.endpoint))["peers"]}
            assert peers["small"]["failures"] == peers["big"]["failures"] == 0
            client.close(linger=0)
            for w in (small, big):
                w.close()
    run(body())
