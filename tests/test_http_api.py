"""The OpenAI HTTP API in the broker's own loop, against scripted workers (issue 7).

Raw HTTP (aiohttp's client) for what a careless client sends, the official `openai`
client for what a careful one expects; FakeWorkers answer, stall or go quiet on cue, so
keep-alives, hang-ups, live streaming and each error status are shown exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import openai
import pytest

from broker.http_api import HttpApi
from common.bodies import Task
from common.codec import unpack
from common.messages import Cancel
from tests.conftest import run
from tests.wire import FakeWorker, running_broker

pytestmark = pytest.mark.timeout(60)
MSG = [{"role": "user", "content": "What is 2+2?"}]


@contextlib.asynccontextmanager
async def api_on(ctx, workers=("w1",), api_key=None, keepalive_s=5.0, **config):
    """A broker with its HTTP API on a free port, and ready FakeWorkers."""
    async with running_broker(ctx, heartbeat_s=0.2, liveness=50, **config) as broker:
        api = HttpApi(broker, "127.0.0.1", 0, api_key, keepalive_s)
        url = await api.start()
        fakes = [FakeWorker(ctx, broker.endpoint, name, model="m1") for name in workers]
        for w in fakes:
            await w.ready(heartbeat_s=0.2)
        while len(broker.registry.serving(b"generate")) < len(fakes):
            await asyncio.sleep(0.02)
        try:
            yield url, fakes, broker
        finally:
            for w in fakes:
                w.close()
            await api.stop()


async def serve(worker: FakeWorker, text: str, pieces: tuple[str, ...] = (),
                delay_s: float = 0.0) -> Task:
    """Take one task; stream `pieces`, wait, then answer `text`."""
    msg = await worker.next()
    task = Task.from_map(unpack(msg.body[0]))
    for seq, piece in enumerate(pieces):
        await worker.reply(msg.client, {"job": task.job, "cand": task.cand, "seq": seq,
                                        "text": piece}, final=False)
    await asyncio.sleep(delay_s)
    await worker.reply(msg.client, {"job": task.job, "cand": task.cand, "text": text,
                                    "finish_reason": "stop",
                                    "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
                       final=True)
    return task


def client(url: str, key: str = "none") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


async def post(url: str, path: str, body, headers=None) -> tuple[int, dict]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with aiohttp.ClientSession() as s:
        async with s.post(url + path, data=data, headers=headers or {}) as r:
            return r.status, await r.json(content_type=None)


def test_a_chat_completion_carries_the_vote_in_x_swarm_and_headers(ctx):
    async def body():
        async with api_on(ctx, ("w1", "w2")) as (url, (w1, w2), _):
            ask = asyncio.create_task(client(url).chat.completions.with_raw_response.create(
                model="swarm", messages=MSG, extra_body={"swarm": {"candidates": 2}}))
            await asyncio.gather(serve(w1, "4"), serve(w2, "4"))
            raw = await ask
            reply = raw.parse()
            assert reply.choices[0].message.content == "4"
            assert reply.choices[0].finish_reason == "stop"
            assert reply.usage.prompt_tokens == 5 and reply.usage.completion_tokens == 2
            vote = reply.model_extra["x_swarm"]
            assert vote["strategy"] == "auto" and len(vote["candidates"]) == 2
            assert raw.headers["X-Swarm-Winner"] == vote["winner"]["peer"]
            assert raw.headers["X-Swarm-Candidates"] == "2/2 ok"
            # issue 8: the explained vote rides along (values: what the broker's vote said)
            assert "vote" in vote and all({"answer", "group", "score", "agreed", "logprob"}
                                          <= set(c) for c in vote["candidates"])
    run(body())


def test_a_pending_vote_keeps_the_stream_alive_with_comments(ctx):
    async def body():
        async with api_on(ctx, keepalive_s=0.05) as (url, (w1,), _):
            async with aiohttp.ClientSession() as s:
                req = {"messages": MSG, "stream": True, "swarm": {"candidates": 1}}
                async with s.post(url + "/v1/chat/completions", json=req) as r:
                    assert r.headers["Content-Type"].startswith("text/event-stream")
                    worker = asyncio.create_task(serve(w1, "four", delay_s=0.5))
                    lines = [line.decode().rstrip("\n") async for line in r.content]
                    await worker
        events = [line for line in lines if line]
        assert events[0].startswith("data: ") and '"role": "assistant"' in events[0]
        assert ": keep-alive" in events
        assert events[-1] == "data: [DONE]"
        data = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in data
                          if c["choices"])
        assert content == "four"
        assert len({c["id"] for c in data}) == 1
    run(body())


def test_strategy_first_streams_the_first_speaker_live_and_it_wins(ctx):
    async def body():
        async with api_on(ctx, ("w1", "w2")) as (url, (w1, w2), _):
            stream = await client(url).chat.completions.create(
                model="swarm", messages=MSG, stream=True,
                extra_body={"swarm": {"candidates": 2, "strategy": "first"}})
            m1, m2 = await w1.next(), await w2.next()
            t1, t2 = (Task.from_map(unpack(m.body[0])) for m in (m1, m2))
            # w1 speaks first; w2 then finishes first with a short answer: the leader still wins
            await w1.reply(m1.client, {"job": t1.job, "cand": t1.cand, "seq": 0,
                                       "text": "The answer "}, final=False)
            seen = []
            async for part in stream:
                if part.choices and part.choices[0].delta.content:
                    seen.append(part.choices[0].delta.content)
                    if len(seen) == 1:
                        await w2.reply(m2.client, {"job": t2.job, "cand": t2.cand, "text": "4"},
                                       final=True)
                        await w1.reply(m1.client, {"job": t1.job, "cand": t1.cand,
                                                   "seq": 1, "text": "is 4"}, final=False)
                        await w1.reply(m1.client, {"job": t1.job, "cand": t1.cand,
                                                   "text": "The answer is 4"}, final=True)
            assert seen == ["The answer ", "is 4"]
    run(body())


def test_a_client_that_hangs_up_cancels_the_job(ctx):
    async def body():
        async with api_on(ctx) as (url, (w1,), broker):
            async with aiohttp.ClientSession() as s:
                req = {"messages": MSG, "stream": True, "swarm": {"candidates": 1}}
                async with s.post(url + "/v1/chat/completions", json=req) as r:
                    await r.content.readline()  # the role chunk: the job runs
                    msg = await w1.next()
            assert await w1.next() == Cancel(msg.client)
            while broker.generate.jobs:
                await asyncio.sleep(0.02)
    run(body())


@pytest.mark.parametrize("body, field", [
    ({"messages": []}, "messages"),
    ({"messages": MSG, "temperature": 9}, "temperature"),
    ({"messages": MSG, "n": 0}, "n"),
    ({"messages": MSG, "stop": [1]}, "stop"),
    ({"messages": MSG, "swarm": {"strategy": "loudest"}}, "swarm"),
    ({"messages": MSG, "swarm": {"temperature_spread": 3}}, "swarm.temperature_spread"),
    ({"messages": MSG, "swarm": {"greedy": "yes"}}, "swarm.greedy"),
    ({"messages": MSG, "tools": [{"type": "function"}]}, "tools"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
    ({"messages": MSG, "logprobs": True}, "logprobs"),
    ({"messages": MSG, "stream_options": {"include_usage": True}}, "stream_options"),
])
def test_a_malformed_body_is_a_400_naming_the_field(ctx, body, field):
    async def go():
        async with api_on(ctx) as (url, _, _b):
            status, reply = await post(url, "/v1/chat/completions", body)
            assert status == 400
            assert reply["error"]["param"] == field.split(".")[0] and reply["error"]["type"]
            assert f"'{field}'" in reply["error"]["message"] or "." not in field
    run(go())


def test_bad_json_unknown_paths_and_methods_get_openai_errors(ctx):
    async def body():
        async with api_on(ctx) as (url, _, _b):
            status, reply = await post(url, "/v1/chat/completions", b"{not json")
            assert status == 400 and "not valid JSON" in reply["error"]["message"]
            status, reply = await post(url, "/v1/chat/completions", b"[1, 2]")
            assert status == 400 and "JSON object" in reply["error"]["message"]
            status, reply = await post(url, "/v1/chat/completions", b"[" * 200_000)
            assert status == 400 and "not valid JSON" in reply["error"]["message"]
            status, reply = await post(url, "/v1/completions", b"\xff\xfe{}")
            assert status == 400 and "not valid JSON" in reply["error"]["message"]
            big = json.dumps({"prompt": "x" * (17 * 1024 * 1024)})
            status, reply = await post(url, "/v1/completions", big)
            assert status == 413 and reply["error"]["message"]
            status, reply = await post(url, "/v1/nothing", {})
            assert status == 404 and reply["error"]["type"] == "not_found_error"
            async with aiohttp.ClientSession() as s:
                async with s.get(url + "/v1/chat/completions") as r:
                    assert r.status == 405 and "error" in await r.json()
    run(body())


def test_each_error_status_reaches_the_openai_client_as_its_exception(ctx):
    async def body():
        async with api_on(ctx, api_key="sekrit") as (url, _, _b):
            with pytest.raises(openai.AuthenticationError):
                await client(url, "wrong").chat.completions.create(model="swarm", messages=MSG)
            good = client(url, "sekrit")
            with pytest.raises(openai.NotFoundError, match="not served"):
                await good.chat.completions.create(model="gpt-9", messages=MSG)
            with pytest.raises(openai.BadRequestError, match="max_tokens"):
                await good.chat.completions.create(model="swarm", messages=MSG, max_tokens=0)
            with pytest.raises(openai.APIStatusError) as err:  # the deadline passes
                await good.chat.completions.create(
                    model="swarm", messages=MSG, extra_body={"swarm": {"timeout_s": 0.05}})
            assert err.value.status_code == 504
            async with aiohttp.ClientSession() as s:  # /health needs no key
                async with s.get(url + "/health") as r:
                    assert r.status == 200 and (await r.json())["workers"] == 1
    run(body())


def test_no_live_worker_is_a_503_and_health_says_so(ctx):
    async def body():
        async with api_on(ctx, workers=()) as (url, _, _b):
            with pytest.raises(openai.InternalServerError) as err:
                await client(url).chat.completions.create(model="swarm", messages=MSG)
            assert err.value.status_code == 503 and "no live worker" in str(err.value)
            async with aiohttp.ClientSession() as s:
                async with s.get(url + "/health") as r:
                    assert r.status == 503
    run(body())


def test_a_non_streaming_client_that_gives_up_cancels_the_job(ctx):
    async def body():
        async with api_on(ctx) as (url, (w1,), broker):
            ask = asyncio.create_task(client(url).chat.completions.create(
                model="swarm", messages=MSG, extra_body={"swarm": {"candidates": 1}}))
            msg = await w1.next()  # the job runs; then the client gives up and hangs up
            ask.cancel()
            assert await w1.next() == Cancel(msg.client)
            assert ask.cancelled()
            while broker.generate.jobs:
                await asyncio.sleep(0.02)
    run(body())


def test_models_lists_swarm_and_each_live_model_and_completions_answer(ctx):
    async def body():
        async with api_on(ctx) as (url, (w1,), _):
            models = await client(url).models.list()
            assert [m.id for m in models.data] == ["swarm", "m1"]
            assert (await client(url).models.retrieve("m1")).id == "m1"
            with pytest.raises(openai.NotFoundError):
                await client(url).models.retrieve("m2")
            ask = asyncio.create_task(client(url).completions.create(
                model="m1", prompt="2+2=", max_tokens=4, extra_body={"swarm": {"candidates": 1}}))
            task = await serve(w1, "4")
            reply = await ask
            assert reply.choices[0].text == "4" and reply.object == "text_completion"
            assert task.sampling.prompt == "2+2=" and task.sampling.max_tokens == 4
    run(body())


def test_metrics_are_served_in_prometheus_text_behind_the_key(ctx):
    from prometheus_client.parser import text_string_to_metric_families

    async def body():
        async with api_on(ctx, api_key="k") as (url, (w1,), _):
            ask = asyncio.create_task(client(url, "k").chat.completions.create(
                model="swarm", messages=MSG, extra_body={"swarm": {"candidates": 1}}))
            await serve(w1, "4")
            await ask
            async with aiohttp.ClientSession() as s:
                async with s.get(url + "/metrics") as r:
                    assert r.status == 401
                async with s.get(url + "/metrics", headers={"Authorization": "Bearer k"}) as r:
                    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                    text = await r.text()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples[("swarm_jobs_total", (("outcome", "ok"),))] == 1
        assert samples[("swarm_votes_won_total", (("peer", "w1"),))] == 1
    run(body())


def test_n_streamed_choices_are_the_best_voted_each_with_its_end(ctx):
    async def body():
        async with api_on(ctx, ("w1", "w2", "w3")) as (url, workers, _):
            stream = await client(url).chat.completions.create(
                model="swarm", messages=MSG, n=2, stream=True,
                extra_body={"swarm": {"strategy": "majority"}})
            await asyncio.gather(*(serve(w, t) for w, t in zip(workers, ("4", "5", "4"))))
            texts, ends = {0: "", 1: ""}, {}
            async for part in stream:
                for choice in part.choices:
                    texts[choice.index] += choice.delta.content or ""
                    if choice.finish_reason:
                        ends[choice.index] = choice.finish_reason
            assert texts == {0: "4", 1: "4"} and ends == {0: "stop", 1: "stop"}  # 2nd best: 2 votes
    run(body())
