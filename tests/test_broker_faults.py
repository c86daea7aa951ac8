"""The broker on loopback against peers that are wrong, slow or gone (issue 5).

Each test plays a raw MDP peer that does what a real, misbehaving program did, and checks
what the others see: the broker keeps serving, every job still ends in one FINAL.
"""

from __future__ import annotations

import asyncio
import random
import string

import pytest
import zmq

from common import frames as F
from common.bodies import Task
from common.codec import pack, unpack
from common.messages import Cancel, ClientRequest, Disconnect, Heartbeat, WorkerRequest
from tests.conftest import run
from tests.wire import (FakeWorker, ask_once, body_of, client_final, dealer, registered,
                        running_broker, status)

pytestmark = pytest.mark.timeout(60)


def ask(question: dict) -> list[bytes]:
    return ClientRequest(F.SERVICE_GENERATE, (pack(question),)).to_frames()


def task_of(msg) -> Task:
    return Task.from_map(unpack(msg.body[0]))


async def answer(worker: FakeWorker, **body) -> Task:
    """Take the next task and send a FINAL with this body (job and cand filled in)."""
    msg = await worker.next(timeout_s=10.0)
    task = task_of(msg)
    await worker.reply(msg.client, {"job": task.job, "cand": task.cand, **body}, final=True)
    return task


def test_null_or_string_usage_fails_only_that_candidate(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            w1 = FakeWorker(ctx, broker.endpoint, "w1")
            await w1.ready()
            await registered(broker)
            client = dealer(ctx, broker.endpoint)
            one = {"prompt": "2+2=", "candidates": 1, "stream": "winner"}
            await client.send_multipart(ask(one))
            await answer(w1, text="4", usage={"completion_tokens": None})
            _, final = await client_final(client)
            assert body_of(final)["winner"]["text"] == "4"

            w2 = FakeWorker(ctx, broker.endpoint, "w2")  # never used, so it is picked first
            await w2.ready()
            await registered(broker, 2)
            await client.send_multipart(ask(one))
            await answer(w2, text="4", usage={"prompt_tokens": "3"})
            await answer(w1, text="four")  # the re-dispatch
            _, final = await client_final(client)
            result = body_of(final)
            assert result["winner"]["text"] == "four" and result["candidates"][0]["attempts"] == 2
            peers = {p["name"]: p for p in (await status(ctx, broker.endpoint))["peers"]}
            assert "usage.prompt_tokens" in peers["w2"]["metrics"]["last_error"]
            for s in (w1, w2):
                s.close()
            client.close()
    run(body())


def test_a_heavy_vote_does_not_stall_heartbeats(ctx):
    """16 answers of 50 KB once took 10 s to vote on the loop: workers died of silence."""
    async def serve(worker: FakeWorker) -> None:
        rng = random.Random(worker.profile.name)
        while True:
            text = "".join(rng.choices(string.ascii_lowercase + " ", k=50_000))
            await answer(worker, text=text)

    async def body():
        async with running_broker(ctx, heartbeat_s=0.1, liveness=15) as broker:
            workers = [FakeWorker(ctx, broker.endpoint, f"w{i}", heartbeat_s=0.1) for i in range(4)]
            for w in workers:
                await w.ready(heartbeat_s=0.1)
            await asyncio.sleep(0.1)
            servers = [asyncio.create_task(serve(w)) for w in workers]
            client = dealer(ctx, broker.endpoint)
            await client.send_multipart(ask({"prompt": "x", "candidates": 16, "stream": "winner"}))
            _, final = await client_final(client, timeout_s=30.0)
            assert len(body_of(final)["candidates"]) == 16 and "winner" in body_of(final)
            await asyncio.sleep(0.5)  # more than the 0.3 s a stalled loop would have needed
            peers = (await status(ctx, broker.endpoint))["peers"]
            assert all(p["live"] for p in peers) and len(peers) == 4
            for t in servers:
                t.cancel()
            for w in workers:
                w.close()
            client.close()
    run(body())


def test_a_client_that_reads_late_still_gets_every_partial_and_the_final(ctx):
    """Without ROUTER_MANDATORY the ROUTER dropped at the high-water mark, FINAL included."""
    count = 20_000

    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "echo", service=b"echo")
            await worker.ready()
            await registered(broker)
            client = ctx.socket(zmq.DEALER)
            client.setsockopt(zmq.LINGER, 0)
            client.setsockopt(zmq.RCVHWM, 10)
            client.connect(broker.endpoint)
            await asyncio.sleep(0.1)
            await client.send_multipart(ClientRequest(b"echo", (b"go",)).to_frames())
            req = await worker.next()
            piece = b"x" * 1024
            for i in range(count):
                await worker.send([F.WORKER, F.W_PARTIAL, req.client, b"", str(i).encode(), piece])
            await worker.send([F.WORKER, F.W_FINAL, req.client, b"", b"end"])
            await asyncio.sleep(0.5)  # the client has not read a thing so far
            partials, final = await client_final(client, timeout_s=10.0)
            assert final.body == (b"end",)
            assert [int(p.body[0]) for p in partials] == list(range(count))
            worker.close()
            client.close()
    run(body())


def test_a_client_that_cancels_stops_its_candidates_and_nothing_more_is_dispatched(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            w1, w2 = FakeWorker(ctx, broker.endpoint, "w1"), FakeWorker(ctx, broker.endpoint, "w2")
            for w in (w1, w2):
                await w.ready()
            await registered(broker, 2)
            client = dealer(ctx, broker.endpoint)
            await client.send_multipart(ask({"prompt": "x", "candidates": 4}))
            reqs = [await w1.next(), await w2.next()]
            await client.send_multipart(ClientRequest(F.SERVICE_CANCEL, (pack({}),)).to_frames())
            assert [await w1.next(), await w2.next()] == [Cancel(r.client) for r in reqs]
            _, final = await client_final(client)
            assert body_of(final)["error"] == "cancelled by the client"
            _, final = await client_final(client)
            assert final.service == F.SERVICE_CANCEL and body_of(final) == {"cancelled": 1}
            for w, r in zip((w1, w2), reqs):
                t = task_of(r)
                await w.reply(r.client, {"job": t.job, "cand": t.cand, "text": "late"}, final=True)
            for w in (w1, w2):  # the two waiting candidates were dropped, not dispatched
                with pytest.raises(AssertionError, match="nothing received"):
                    await w.next(timeout_s=0.5)
                w.close()
            client.close()
    run(body())


def test_a_client_that_vanishes_has_its_candidates_cancelled(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "w1")
            await worker.ready()
            await registered(broker)
            client = dealer(ctx, broker.endpoint)
            await client.send_multipart(ask({"prompt": "x", "candidates": 1}))
            req = await worker.next()
            client.close()  # Ctrl-C: the socket is gone without a word
            await asyncio.sleep(0.3)
            t = task_of(req)
            await worker.reply(req.client, {"job": t.job, "cand": t.cand, "seq": 0, "text": "a"},
                               final=False)
            assert await worker.next() == Cancel(req.client)
            worker.close()
    run(body())


def test_a_reply_of_thirteen_frames_is_relayed_and_frees_the_slot(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "strict", service=b"echo")
            await worker.ready()
            await registered(broker)
            for _ in range(2):  # the second request proves the slot came back
                client = dealer(ctx, broker.endpoint)
                await client.send_multipart(ClientRequest(b"echo", (b"q",)).to_frames())
                req = await worker.next()
                parts = [b"part-%d" % i for i in range(13)]
                await worker.send([F.WORKER, F.W_FINAL, req.client, b"", *parts])
                _, final = await client_final(client)
                assert list(final.body) == parts
                client.close()
            worker.close()
    run(body())


def test_a_confused_busy_worker_is_disconnected_and_its_client_told(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "odd", service=b"echo")
            await worker.ready()
            await registered(broker)
            client = dealer(ctx, broker.endpoint)
            await client.send_multipart(ClientRequest(b"echo", (b"q",)).to_frames())
            await worker.next()
            await worker.send([F.WORKER, b"\x09", b"what"])
            assert isinstance(await worker.next(), Disconnect)
            _, final = await client_final(client)
            assert "malformed" in body_of(final)["error"]
            worker.close()
            client.close()
    run(body())


def test_anonymous_workers_that_come_and_go_are_forgotten(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            named = FakeWorker(ctx, broker.endpoint, "named")
            await named.ready()
            for _ in range(30):
                w = FakeWorker(ctx, broker.endpoint, "", anonymous=True)
                await w.ready()
                await w.send(Disconnect().to_frames())
                await asyncio.sleep(0.01)
                w.close()
            await asyncio.sleep(0.1)
            assert [p["name"] for p in (await status(ctx, broker.endpoint))["peers"]] == ["named"]
            named.close()
    run(body())


def test_the_broker_beats_at_the_interval_each_worker_announces(ctx):
    async def body():
        async with running_broker(ctx, heartbeat_s=5.0) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "quick", heartbeat_s=0.1)
            await worker.ready(heartbeat_s=0.1)
            beats = 0
            for _ in range(4):  # at the broker's own 5 s pace this would take 15 s and more
                beats += isinstance(await worker.next(skip_heartbeats=False, timeout_s=5.0), Heartbeat)
            assert beats == 4
            assert [p["live"] for p in (await status(ctx, broker.endpoint))["peers"]] == [True]
            worker.close()
    run(body())


def test_two_workers_with_one_name_are_two_peers(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            a = FakeWorker(ctx, broker.endpoint, "w1", node_id="aaaaaaaaaaaa")
            b = FakeWorker(ctx, broker.endpoint, "w1", node_id="bbbbbbbbbbbb")
            for i, w in enumerate((a, b), start=1):
                await w.ready()
                await registered(broker, i)
            names = [p["name"] for p in (await status(ctx, broker.endpoint))["peers"]]
            assert names == ["w1", "w1~bbbbbb"]
            a.close()
            b.close()
    run(body())


def test_a_profile_with_nan_is_refused(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "nan")
            frame = pack({"name": "nan", "timeout_s": float("nan")})
            await worker.send([F.WORKER, F.W_READY, F.SERVICE_GENERATE, frame])
            assert isinstance(await worker.next(), Disconnect)
            _, final = await ask_once(ctx, broker.endpoint, F.MMI_SERVICE, b"generate")
            assert final.body == (b"404",)
            worker.close()
    run(body())


def test_a_waiting_request_is_not_starved_by_a_big_job_on_the_wire(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "w1")
            await worker.ready()
            await registered(broker)
            big, small = dealer(ctx, broker.endpoint), dealer(ctx, broker.endpoint)
            await big.send_multipart(ask({"prompt": "big", "candidates": 64, "stream": "winner"}))
            first = await worker.next()
            await small.send_multipart(ask({"prompt": "small", "candidates": 1, "stream": "winner"}))
            while (await status(ctx, broker.endpoint))["broker"]["jobs_active"] < 2:
                await asyncio.sleep(0.05)  # until the small job waits beside the big one
            t = task_of(first)
            await worker.reply(first.client, {"job": t.job, "cand": t.cand, "text": "a"}, final=True)
            nxt = await worker.next()
            assert isinstance(nxt, WorkerRequest) and task_of(nxt).sampling.prompt == "small"
            for s in (worker, big, small):
                s.close()
    run(body())


def test_swarm_broker_max_jobs_refuses_the_next_job_as_busy(ctx, procs):
    from tests.conftest import free_port
    port = free_port()
    procs.broker(port, "--max-jobs", "1")
    endpoint = f"tcp://127.0.0.1:{port}"

    async def body():
        worker = FakeWorker(ctx, endpoint, "holder", heartbeat_s=0.2)
        await worker.ready(heartbeat_s=0.2)  # the broker process may still be starting
        first = dealer(ctx, endpoint)
        for _ in range(100):  # until the broker knows the worker: no job is refused for lack
            _, final = await ask_once(ctx, endpoint, F.MMI_SERVICE, b"generate", timeout_s=10.0)
            if final.body == (b"200",):
                break
            await asyncio.sleep(0.1)
        await first.send_multipart(ask({"prompt": "x", "candidates": 1}))
        await worker.next(timeout_s=10.0)  # the worker holds job 1
        _, final = await ask_once(ctx, endpoint, F.SERVICE_GENERATE,
                                  pack({"prompt": "y", "candidates": 1}), timeout_s=10.0)
        assert "busy" in body_of(final)["error"]
        worker.close()
        first.close()
    run(body())
