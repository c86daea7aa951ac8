"""The web page's HTTP side (broker/web.py) in the broker's own loop, against scripted
workers: the event stream from its snapshot to a job's end, asking from the page, the API
key on the page and its stream, and what a page that leaves leaves behind (nothing)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from broker.http_auth import COOKIE
from tests.conftest import run
from tests.test_http_api import api_on, serve
from tests.wire import FakeWorker

pytestmark = pytest.mark.timeout(60)


class Stream:
    """An open GET /ui/events: its events, one at a time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response, self.waiting, self.retry = response, [], None

    async def next(self) -> dict:
        while not self.waiting:
            line = (await self.response.content.readline()).decode()
            assert line, "the stream ended"
            if line.startswith("retry: "):
                self.retry = int(line[7:])
            elif line.startswith("data: "):
                self.waiting += json.loads(line[6:])
        return self.waiting.pop(0)

    async def until(self, check) -> list[dict]:
        """Events up to and including the first that `check` accepts."""
        seen = []
        while not seen or not check(seen[-1]):
            seen.append(await self.next())
        return seen


async def ask(session: aiohttp.ClientSession, url: str, body, **kw) -> tuple[int, dict]:
    async with session.post(url + "/ui/ask", json=body, **kw) as r:
        return r.status, await r.json(content_type=None)


def test_a_page_sees_the_peers_then_a_job_it_asked_play_out(ctx):
    async def body():
        async with api_on(ctx, ("w1", "w2")) as (url, (w1, w2), broker):
            async with aiohttp.ClientSession() as s, s.get(url + "/ui/events") as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                page = Stream(r)
                snap = await page.next()
                assert page.retry == 1000 and snap["type"] == "snapshot"
                assert {(p["name"], p["live"]) for p in snap["peers"]} == \
                    {("w1", True), ("w2", True)}
                assert snap["broker"]["api"] == url + "/v1" and snap["jobs"] == []
                status, got = await ask(s, url, {"question": "What is 2+2?", "candidates": 2,
                                                 "strategy": "majority", "max_tokens": 8})
                assert status == 202
                job = got["job"]
                await asyncio.gather(serve(w1, "4", ("The answer ", "is 4")), serve(w2, "4"))
                seen = await page.until(lambda e: e["type"] == "end")
        first = seen[0]
        assert first["type"] == "job" and first["job"]["id"] == job
        assert first["job"]["question"] == "What is 2+2?" and first["job"]["strategy"] == "majority"
        cands = [e for e in seen if e["type"] == "cand"]
        assert {e["cand"] for e in cands if e["event"] == "dispatched"} == {0, 1}
        streamed = "".join(e["text"] for e in cands if e["event"] == "token" and e["cand"] == 0
                           and e["peer"] == "w1")
        assert streamed in ("", "The answer is 4")  # w1 may have had candidate 1
        assert "The answer is 4" in {"".join(e["text"] for e in cands if e["event"] == "token"
                                             and e["cand"] == c) for c in (0, 1)}
        end = seen[-1]
        assert end["job"] == job and end["state"] == "done"
        assert end["final"]["winner"]["text"] == "4" and end["final"]["vote"]["reason"]
        assert not broker.watch.active  # the page left: nobody is watched for
    run(body())


def test_nobody_watching_runs_no_task_and_queues_nothing(ctx):
    async def body():
        async with api_on(ctx) as (url, (w1,), broker):
            async with aiohttp.ClientSession() as s:
                status, got = await ask(s, url, {"question": "hi", "candidates": 1})
                assert status == 202
                await serve(w1, "hello")
                while broker.generate.jobs:
                    await asyncio.sleep(0.01)
            assert broker.watch.pending == [] and not broker.watch.active
            assert not flushers()  # no page watches: no task runs for one
            assert broker.watch.recent[0][0].id == got["job"]  # a later page still sees it
    run(body())


def flushers() -> list[asyncio.Task]:
    """The web view's flushing tasks running now."""
    return [t for t in asyncio.all_tasks() if "_flush_loop" in repr(t.get_coro())]


def test_a_page_that_hangs_up_is_forgotten_and_another_gets_a_fresh_snapshot(ctx):
    async def body():
        async with api_on(ctx) as (url, (w1,), broker):
            async with aiohttp.ClientSession() as s:
                status, got = await ask(s, url, {"question": "count", "candidates": 1})
                task = asyncio.create_task(serve(w1, "one two", ("one ",), delay_s=0.3))
                async with s.get(url + "/ui/events") as r:
                    snap = await Stream(r).next()
                    assert broker.watch.active and len(flushers()) == 1
                assert [j["id"] for j in snap["jobs"]] == [got["job"]]
                assert snap["jobs"][0]["state"] == "running"
                await task
                while broker.watch.active or broker.generate.jobs:
                    await asyncio.sleep(0.01)
                async with s.get(url + "/ui/events") as r:
                    snap = await Stream(r).next()
                ended = snap["jobs"][0]
                assert ended["state"] == "done" and ended["cands"][0]["text"] == "one two"
                assert ended["final"]["winner"]["text"] == "one two"
    run(body())


@pytest.mark.parametrize("body, status, says", [
    ({"candidates": 2}, 400, "'question' must be a non-empty string"),
    ({"question": "   "}, 400, "'question' must be a non-empty string"),
    ({"question": "q", "candidates": 0}, 400, "candidates"),
    ({"question": "q", "candidates": True}, 400, "candidates"),
    ({"question": "q", "strategy": "loudest"}, 400, "strategy"),
    ({"question": "q", "max_tokens": "many"}, 400, "max_tokens"),
    ({"question": "q", "temperature": 5}, 400, "temperature"),
    (["q"], 400, "must be a JSON object"),
])
def test_a_bad_question_from_the_page_gets_one_sentence(ctx, body, status, says):
    async def test():
        async with api_on(ctx) as (url, _, broker):
            async with aiohttp.ClientSession() as s:
                got_status, got = await ask(s, url, body)
                assert broker.generate.jobs == {}
        assert got_status == status and says in got["error"]["message"]
    run(test())


def test_asking_with_no_worker_or_not_as_json_is_refused(ctx):
    async def body():
        async with api_on(ctx, workers=()) as (url, _, broker):
            async with aiohttp.ClientSession() as s:
                status, got = await ask(s, url, {"question": "anyone?"})
                assert status == 503 and "no live worker" in got["error"]["message"]
                async with s.post(url + "/ui/ask", data="question=hi",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
                    assert r.status == 415  # another site's form cannot ask
    run(body())


def test_the_api_key_guards_the_page_its_stream_and_ask(ctx):
    async def body():
        async with api_on(ctx, api_key="s3cret") as (url, _, broker):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                async with s.get(url + "/") as r:
                    assert r.status == 401 and r.content_type == "text/html"
                    assert "<form" in await r.text()  # the login form, no data
                for path in ("/ui/events", "/static/app.js"):
                    async with s.get(url + path) as r:
                        assert r.status == 401
                assert (await ask(s, url, {"question": "q"}))[0] == 401
                async with s.post(url + "/ui/login", data={"key": "wrong"},
                                  allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/?login=wrong"
                    assert COOKIE not in r.cookies
                async with s.post(url + "/ui/login", data={"key": "s3cret"},
                                  allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/"
                    cookie = r.cookies[COOKIE]
                    assert cookie["httponly"] and cookie["samesite"] == "Strict"
                    assert "s3cret" not in cookie.value  # an HMAC of the key, not the key
                async with s.get(url + "/ui/events") as r:
                    assert r.status == 200 and (await Stream(r).next())["type"] == "snapshot"
                async with s.get(url + "/v1/models") as r:
                    assert r.status == 401  # the cookie is the page's: the API wants the key
                async with s.get(url + "/ui/logout", allow_redirects=False) as r:
                    assert r.status == 303
                async with s.get(url + "/ui/events") as r:
                    assert r.status == 401
            async with aiohttp.ClientSession() as s:
                headers = {"Authorization": "Bearer s3cret"}
                async with s.get(url + "/", headers=headers) as r:
                    assert r.status == 200 and "<html" in (await r.text()).lower()
    run(body())


def test_the_static_files_are_only_the_pages_own(ctx):
    async def body():
        async with api_on(ctx) as (url, _, broker):
            async with aiohttp.ClientSession() as s:
                for path, kind in (("/static/app.js", "text/javascript"),
                                   ("/static/dom.js", "text/javascript"),
                                   ("/static/peers.js", "text/javascript"),
                                   ("/static/style.css", "text/css"), ("/", "text/html")):
                    async with s.get(url + path) as r:
                        assert r.status == 200 and r.content_type == kind
                for path in ("/static/login.html", "/static/..%2Fweb.py", "/static/../web.py",
                             "/static/index.html"):
                    async with s.get(url + path) as r:
                        assert r.status == 404, path
    run(body())


def test_a_worker_that_goes_silent_is_shown_lost_and_one_that_joins_live(ctx):
    async def body():
        async with api_on(ctx, ("w1", "w2")) as (url, (w1, w2), broker):
            async with aiohttp.ClientSession() as s, s.get(url + "/ui/events") as r:
                page = Stream(r)
                await page.next()
                w2.close()  # no DISCONNECT: it just stops, as a killed process does
                seen = await page.until(lambda e: e["type"] == "peers" and any(
                    p["name"] == "w2" and not p["live"] for p in e["peers"]))
                lost = next(p for p in seen[-1]["peers"] if p["name"] == "w2")
                assert not lost["connected"] and lost["slots"] == 0
                w3 = FakeWorker(ctx, broker.endpoint, "w3", model="m1")
                try:
                    await w3.ready(heartbeat_s=0.2)
                    seen = await page.until(lambda e: e["type"] == "peers" and any(
                        p["name"] == "w3" and p["live"] for p in e["peers"]))
                finally:
                    w3.close()
    run(body())


def test_a_key_or_cookie_that_is_not_utf8_is_refused_not_an_error(ctx):
    async def body():
        async with api_on(ctx, api_key="s3cret") as (url, _, broker):
            port = int(url.rsplit(":", 1)[1])
            for header in (b"Authorization: Bearer \xff\xfe", b"Cookie: swarm_session=\xff"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /ui/events HTTP/1.1\r\nHost: swarm\r\n" + header +
                             b"\r\nConnection: close\r\n\r\n")
                status = (await reader.read()).split(b"\r\n", 1)[0]
                writer.close()
                assert status == b"HTTP/1.1 401 Unauthorized", header
            assert broker.stats["errors"] == 0
    run(body())
