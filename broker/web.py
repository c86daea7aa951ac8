"""The live web page, served by the broker's HTTP server beside the OpenAI API.

GET / is the page (broker/web/: plain HTML, CSS and JavaScript, no build step); GET
/ui/events its server-sent event stream (broker/watch.py makes the events); POST /ui/ask
asks the swarm a question that then plays out on every open page; /ui/login and
/ui/logout set and clear the session cookie where the broker has an API key.

While anybody watches, one task flushes the events every FLUSH_S; with nobody, there is
no task and the job flow's hooks return at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from broker import openai_reply as R
from broker.http_auth import COOKIE, Auth
from broker.http_stream import SSE_HEADERS, wait_final
from broker.local_job import LocalJob
from broker.openai_request import ApiError
from broker.watch import FLUSH_S, Watcher
from common import __version__
from common.bodies import GenerateRequest
from common.errors import BodyError

log = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).with_name("web")
STATIC = {"app.js": "text/javascript", "dom.js": "text/javascript",
          "peers.js": "text/javascript", "style.css": "text/css"}
KEEPALIVE_S = 15.0      # a comment line this often on a quiet stream
WRITE_TIMEOUT_S = 30.0  # a page that takes no bytes this long is let go
RETRY_MS = 1000         # how soon a page's EventSource reconnects
MAX_QUESTION_CHARS = 20_000
ASK_DEFAULTS = {"candidates": 3, "strategy": "auto", "max_tokens": 128, "temperature": 0.7}


class WebView:
    def __init__(self, broker, auth: Auth, flush_s: float = FLUSH_S,
                 keepalive_s: float = KEEPALIVE_S) -> None:
        self.broker, self.auth = broker, auth
        self.watch = broker.watch
        self.flush_s, self.keepalive_s = flush_s, keepalive_s
        self.api_url = ""
        self._flusher: asyncio.Task | None = None
        self._asked: set[asyncio.Task] = set()  # jobs asked on a page, running to their end

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/ui/events", self.events)
        app.router.add_post("/ui/ask", self.ask)
        app.router.add_post("/ui/login", self.login)
        app.router.add_get("/ui/logout", self.logout)

    async def stop(self) -> None:
        """The broker stops: every page's stream ends (its page reconnects to the next
        broker), and so do the jobs asked from a page and the flushing."""
        for watcher in list(self.watch.watchers):
            watcher.dropped = True
            watcher.wake()
            self.watch.unsubscribe(watcher)
        tasks = [*self._asked, *([self._flusher] if self._flusher else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the page ------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        return _file("index.html", "text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return _file(name, STATIC[name])

    async def login(self, request: web.Request) -> web.Response:
        if not self.auth.key_ok(await _field(request, "key")):
            raise web.HTTPSeeOther("/?login=wrong")  # the login page says so
        redirect = web.HTTPSeeOther("/")
        self.auth.log_in(redirect)
        raise redirect

    async def logout(self, request: web.Request) -> web.Response:
        redirect = web.HTTPSeeOther("/")
        redirect.del_cookie(COOKIE, path="/")
        raise redirect

    # -- the event stream ----------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        wake = asyncio.Event()
        watcher = Watcher(wake.set)
        first = self.watch.subscribe(watcher, self._snapshot())
        self._start_flusher()
        try:
            await self._write(response, f"retry: {RETRY_MS}\n".encode() + first)
            while not watcher.dropped:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.keepalive_s)
                wake.clear()
                await self._write(response, watcher.take() or b": keep-alive\n\n")
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the page went away, or stopped reading: it reconnects if it is still there
        finally:
            self.watch.unsubscribe(watcher)
        return response

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)

    def _snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        status = self.broker.services.status(now)
        info = status["broker"]
        broker = {k: info.get(k) for k in ("version", "endpoint", "swarm", "uptime_s",
                                            "jobs_active", "stopping")}
        broker.update(version=__version__, api=f"{self.api_url}/v1" if self.api_url else None,
                      auth=self.auth.key is not None)
        return self.watch.snapshot(broker, status["peers"],
                                   list(self.broker.generate.jobs.values()), now)

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        """Events out every flush_s while anybody watches; then the task ends."""
        while self.watch.active:
            await asyncio.sleep(self.flush_s)
            try:
                self.watch.flush(time.monotonic(), self._peers)
            except Exception:  # a bug of ours must not stop every page's stream
                log.exception("error sending the web page's events")

    def _peers(self) -> list:
        return self.broker.services.status(time.monotonic())["peers"]

    # -- asking from the page ------------------------------------------------------------
    async def ask(self, request: web.Request) -> web.Response:
        request_ = _ask_request(await _body(request))
        job = LocalJob(self.broker, request_)
        ended = job.ended_at_once()
        if ended is not None:
            job.close()
            raise R.job_error(ended)
        ids = self.broker.generate.by_client.get(job.identity, set())
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._asked.add(task)
        task.add_done_callback(self._asked.discard)
        return web.json_response({"job": next(iter(ids), None)}, status=202)

    @staticmethod
    async def _run(job: LocalJob) -> None:
        try:
            await wait_final(job)
        finally:
            job.close("the broker's web server stopped")


def _ask_request(body: Any) -> GenerateRequest:
    """The page's question as a job, every field checked."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ApiError(400, "'question' must be a non-empty string", "question")
    if len(question) > MAX_QUESTION_CHARS:
        raise ApiError(400, f"'question' is over {MAX_QUESTION_CHARS} characters", "question")
    job = {k: body.get(k, v) for k, v in ASK_DEFAULTS.items()}
    job.update(messages=[{"role": "user", "content": question}], stream="winner")
    try:
        return GenerateRequest.from_map(job)
    except BodyError as e:
        raise ApiError(400, str(e), e.field) from e


async def _body(request: web.Request) -> Any:
    if request.content_type != "application/json":  # a form from another site cannot ask
        raise ApiError(415, "send the question as application/json")
    try:
        return json.loads(await request.read())
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from e


async def _field(request: web.Request, name: str) -> str:
    """One field of a form or a JSON object; "" when it is missing or not text."""
    if request.content_type == "application/json":
        with contextlib.suppress(ValueError, RecursionError):
            body = json.loads(await request.read())
            value = body.get(name) if isinstance(body, dict) else None
            return value if isinstance(value, str) else ""
        return ""
    value = (await request.post()).get(name)
    return value if isinstance(value, str) else ""


def _file(name: str, content_type: str, status: int = 200) -> web.Response:
    try:
        body = (PAGE_DIR / name).read_bytes()
    except OSError as e:
        log.error("the web page's %s cannot be read: %s", name, e)
        raise web.HTTPNotFound() from e
    return web.Response(body=body, status=status, content_type=content_type,
                        headers={"Cache-Control": "no-cache"})


def login_page() -> web.Response:
    """What GET / shows without the key: a form that posts it to /ui/login."""
    return _file("login.html", "text/html", 401)
