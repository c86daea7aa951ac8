"""The broker on real loopback sockets, against raw MDP/0.2 clients and scripted workers."""

from __future__ import annotations

import asyncio

from common import frames as F
from common.bodies import Chunk, Outcome, Task
from common.codec import pack, unpack
from common.messages import ClientRequest, Disconnect, Heartbeat, WorkerRequest
from tests.conftest import run
from tests.wire import FakeWorker, ask_once, body_of, client_final, dealer, registered, running_broker

QUESTION = {"prompt": "2+2=", "candidates": 2, "max_tokens": 4, "stream": "progress"}


def test_unknown_service_gets_an_error_reply(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            _, final = await ask_once(ctx, broker.endpoint, b"no.such", b"x")
            assert final.service == b"no.such"
            assert "no worker offers the service 'no.such'" in body_of(final)["error"]
    run(body())


def test_mmi_service_lookup(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            async def mmi(name: bytes) -> bytes:
                _, final = await ask_once(ctx, broker.endpoint, F.MMI_SERVICE, name)
                return final.body[0]

            assert await mmi(b"generate") == b"404"
            assert await mmi(b"swarm.status") == b"200"
            worker = FakeWorker(ctx, broker.endpoint, "w1")
            await worker.ready()
            await registered(broker)
            assert await mmi(b"generate") == b"200"
            # the client library asks the same question
            from client.client import SwarmClient
            lib = SwarmClient(broker.endpoint, ctx)
            assert await lib.has_service("generate") and not await lib.has_service("nope")
            worker.close()
    run(body())


def test_generate_without_workers_fails_at_once(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            _, final = await ask_once(ctx, broker.endpoint, F.SERVICE_GENERATE, pack(QUESTION))
            assert "no live worker" in body_of(final)["error"]
    run(body())


def test_bad_generate_body_names_the_field(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            bad = dict(QUESTION, candidates="three")
            _, final = await ask_once(ctx, broker.endpoint, F.SERVICE_GENERATE, pack(bad))
            assert "'candidates'" in body_of(final)["error"]
    run(body())


def test_plain_routing_with_req_style_framing(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "echo", service=b"echo", delimited=True)
            await worker.ready()
            await registered(broker)
            client = dealer(ctx, broker.endpoint)
            await client.send_multipart(ClientRequest(b"echo", (b"hello", b"world")).to_frames())
            req = await worker.next()
            assert isinstance(req, WorkerRequest) and req.body == (b"hello", b"world")
            await worker.send([F.WORKER, F.W_PARTIAL, req.client, b"", b"hel"])
            await worker.send([F.WORKER, F.W_FINAL, req.client, b"", b"hello world"])
            partials, final = await client_final(client)
            assert [p.body for p in partials] == [(b"hel",)]
            assert final.body == (b"hello world",) and final.service == b"echo"
            worker.close()
            client.close()
    run(body())


def test_garbage_does_not_stop_the_next_job(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "w1")
            await worker.ready()
            await registered(broker)
            vandal = dealer(ctx, broker.endpoint)
            for frames in ([b"\xff" * 10], [F.CLIENT], [F.CLIENT, b"\x09", b"x"], [F.WORKER, b"\x02"],
                           [F.CLIENT, F.C_REQUEST, b"generate", b"\xc1not msgpack"],
                           [F.CLIENT, F.C_REQUEST, b"bad service", b""], [b""] * 40):
                await vandal.send_multipart(frames)
            client = dealer(ctx, broker.endpoint)
            await client.send_multipart(ClientRequest(F.SERVICE_GENERATE,
                                                      (pack(dict(QUESTION, candidates=1)),)).to_frames())
            req = await worker.next()
            task = Task.from_map(unpack(req.body[0]))
            await worker.reply(req.client, Outcome(task.job, task.cand, text="4").to_map(), final=True)
            _, final = await client_final(client)
            assert body_of(final)["winner"]["text"] == "4"
            assert broker.rejected["malformed"] >= 5
            # the vandal's bad-body request got an error reply, not silence
            _, bad = await client_final(vandal)
            assert "bad request" in body_of(bad)["error"]
            for s in (worker.sock, vandal, client):
                s.close()
    run(body())


def test_silent_worker_mid_job_still_ends_in_one_final(ctx):
    async def body():
        # w2's silence must show within the test, yet a loaded machine may stall the loop for
        # a while: 1 s of silence, ten missed beats, counts as dead
        async with running_broker(ctx, heartbeat_s=0.1, liveness=10, timeout_s=30.0) as broker:
            w1, w2 = FakeWorker(ctx, broker.endpoint, "w1"), FakeWorker(ctx, broker.endpoint, "w2")
            await w1.ready(heartbeat_s=0.1)
            await w2.ready(heartbeat_s=0.1)
            await asyncio.sleep(0.05)
            client = dealer(ctx, broker.endpoint)
            await client.send_multipart(ClientRequest(F.SERVICE_GENERATE, (pack(QUESTION),)).to_frames())
            r1, _ = await w1.next(), await w2.next()  # both take a candidate
            t1 = Task.from_map(unpack(r1.body[0]))
            await w1.reply(r1.client, Chunk(t1.job, t1.cand, 0, "fo").to_map(), final=False)
            # w2 goes silent; w1 answers its candidate and then the re-dispatched one
            w2.close()
            await w1.reply(r1.client, Outcome(t1.job, t1.cand, text="four").to_map(), final=True)
            redo = await w1.next()
            t2 = Task.from_map(unpack(redo.body[0]))
            assert t2.cand != t1.cand
            await w1.reply(redo.client, Outcome(t2.job, t2.cand, text="four").to_map(), final=True)
            partials, final = await client_final(client)
            result = body_of(final)
            assert [c["ok"] for c in result["candidates"]] == [True, True]
            assert any(unpack(p.body[0])["event"] == "retry" for p in partials)
            await asyncio.sleep(0.3)
            assert not await client.poll(100), "a second FINAL was sent"
            w1.close()
            client.close()
    run(body())


def test_ready_twice_is_disconnected_and_busy_workers_get_heartbeats(ctx):
    async def body():
        # beats every 0.1 s, but a worker that never beats stays live for 10 s: a loaded
        # machine may take a while between READY and the request
        async with running_broker(ctx, heartbeat_s=0.1, liveness=100) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "w1")
            await worker.ready()
            await registered(broker)
            client = dealer(ctx, broker.endpoint)
            await client.send_multipart(ClientRequest(F.SERVICE_GENERATE,
                                                      (pack(dict(QUESTION, candidates=1)),)).to_frames())
            assert isinstance(await worker.next(), WorkerRequest)
            # busy now: heartbeats must still arrive
            assert isinstance(await worker.next(skip_heartbeats=False), Heartbeat)
            await worker.ready()
            msg = await worker.next()
            assert isinstance(msg, Disconnect)
            _, final = await client_final(client)
            assert "sent READY twice" in body_of(final)["error"]
            worker.close()
            client.close()
    run(body())


def test_unknown_worker_heartbeat_gets_disconnect(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            stranger = FakeWorker(ctx, broker.endpoint, "x")
            await stranger.send(Heartbeat().to_frames())
            assert isinstance(await stranger.next(), Disconnect)
            stranger.close()
    run(body())


def test_status_shows_profile_and_metrics(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "w1")
            await worker.ready()
            await registered(broker)
            _, final = await ask_once(ctx, broker.endpoint, F.SERVICE_STATUS, pack({}))
            status = body_of(final)
            (peer,) = status["peers"]
            assert peer["name"] == "w1" and peer["live"] and peer["slots"] == 1
            assert peer["profile"]["seed_variation"] is True
            assert set(peer["metrics"]) >= {"requests", "successes", "failures", "timeouts",
                                            "latency_mean_s", "ttft_mean_s", "last_error",
                                            "last_error_at"}
            worker.close()
    run(body())
