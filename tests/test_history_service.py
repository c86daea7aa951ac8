"""swarm.history and the state an in-process broker keeps across a restart: real loopback
sockets, scripted workers."""

from __future__ import annotations

import sqlite3

import pytest

from common import frames as F
from common.bodies import Chunk, Outcome, Task
from common.codec import pack, unpack
from common.messages import ClientRequest
from tests.conftest import run
from tests.wire import FakeWorker, ask_once, body_of, client_final, dealer, registered, running_broker

pytestmark = pytest.mark.timeout(60)
PROMPT = "2+2="
QUESTION = {"prompt": PROMPT, "candidates": 1, "max_tokens": 4, "stream": "progress"}


async def _one_job(ctx, broker, worker: FakeWorker, text: str) -> dict:
    client = dealer(ctx, broker.endpoint)
    try:
        await client.send_multipart(ClientRequest(F.SERVICE_GENERATE,
                                                  (pack(QUESTION),)).to_frames())
        req = await worker.next()
        task = Task.from_map(unpack(req.body[0]))
        await worker.reply(req.client, Chunk(task.job, task.cand, 0, text).to_map(), final=False)
        await worker.reply(req.client, Outcome(task.job, task.cand, text=text).to_map(), final=True)
        _, final = await client_final(client)
        return body_of(final)
    finally:
        client.close()


async def _history(ctx, endpoint: str, **body) -> dict:
    _, final = await ask_once(ctx, endpoint, F.SERVICE_HISTORY, pack(body))
    return body_of(final)


def test_history_lists_jobs_newest_first_with_no_question_text(ctx):
    async def body():
        async with running_broker(ctx) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "w1")
            await worker.ready()
            await registered(broker)
            first = await _one_job(ctx, broker, worker, "4")
            second = await _one_job(ctx, broker, worker, "four")
            jobs = (await _history(ctx, broker.endpoint))["jobs"]
            assert [j["job"] for j in jobs] == [second["job"], first["job"]]
            newest = jobs[0]
            assert newest["winner"] == {"peer": "w1", "cand": 0}
            assert newest["strategy"] == "auto" and newest["outcome"] == "ok"
            assert newest["candidates"][0]["peer"] == "w1" and newest["candidates"][0]["ok"]
            assert newest["total_s"] >= 0 and len(newest["question"]) == 16
            assert PROMPT not in repr(jobs)  # a digest, never the question itself
            assert len((await _history(ctx, broker.endpoint, limit=1))["jobs"]) == 1
            _, mmi = await ask_once(ctx, broker.endpoint, F.MMI_SERVICE, F.SERVICE_HISTORY)
            assert mmi.body == (b"200",)
            worker.close()
    run(body())


@pytest.mark.parametrize("limit", [0, "ten", 10**9, -5])
def test_a_bad_limit_gets_one_clear_error(ctx, limit):
    async def body():
        async with running_broker(ctx) as broker:
            reply = await _history(ctx, broker.endpoint, limit=limit)
            assert reply["error"].startswith("bad request: field 'limit' must be")
            assert broker.rejected["bad_request"] == 1
    run(body())


def test_a_restarted_broker_has_the_same_peers_and_jobs(ctx, tmp_path):
    state = tmp_path / "broker.sqlite3"

    async def first_run():
        async with running_broker(ctx, state_file=state) as broker:
            worker = FakeWorker(ctx, broker.endpoint, "w1")
            await worker.ready()
            await registered(broker)
            for text in ("4", "4", "4"):
                await _one_job(ctx, broker, worker, text)
            before = broker.metrics.peer("w1").to_map()
            worker.close()
            return before, (await _history(ctx, broker.endpoint))["jobs"]

    async def second_run():
        async with running_broker(ctx, state_file=state) as broker:
            from tests.wire import status
            peers = (await status(ctx, broker.endpoint))["peers"]
            return peers, (await _history(ctx, broker.endpoint))["jobs"]

    # Given a broker that ran three jobs on w1 and was stopped (run's finally saves)
    before, jobs = run(first_run())
    # When a new broker starts on the same file, before w1 reconnects
    peers, jobs_after = run(second_run())
    # Then it lists w1 with the same metrics, and the same jobs
    assert [p["name"] for p in peers] == ["w1"] and not peers[0]["live"]
    assert peers[0]["metrics"] == before and before["successes"] == 3
    assert jobs_after == jobs and len(jobs) == 3
    rows = sqlite3.connect(state).execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    assert rows == 3


def test_a_history_reply_fits_in_one_body_however_big_the_jobs():
    from broker.history import REPLY_BYTES, History
    failed = {"cand": 0, "peer": "p" * 200, "state": "failed", "ok": False, "tokens": 0,
              "ttft_s": None, "latency_s": 1.0, "error": "e" * 300}
    history = History(1000)
    for i in range(1000):  # 1000 jobs of 128 failed candidates: ~70 MB packed in all
        history.add({"job": f"{i:012x}", "at": float(i), "question": "0" * 16,
                     "strategy": "auto", "method": None, "outcome": "failed", "error": "x",
                     "winner": None, "candidates": [failed] * 128, "total_s": 1.0})
    jobs = history.recent(1000)
    assert 0 < len(jobs) < 1000 and jobs[0]["job"] == f"{999:012x}"  # the newest first
    assert len(pack({"jobs": jobs})) <= REPLY_BYTES < F.MAX_BODY_BYTES
    assert len(history.recent(3)) == 3
