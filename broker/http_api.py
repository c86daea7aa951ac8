"""The OpenAI-compatible HTTP API, served by aiohttp in the broker's own asyncio loop.

POST /v1/chat/completions, POST /v1/completions, GET /v1/models[/ID], GET /health, GET /metrics.
A request becomes a job through the same GenerateService API MDP clients use
(Broker.submit_local): no second MDP client, no socket in between. Every error has
OpenAI's shape {"error": {"message", "type", "param", "code"}} and its proper status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from broker import openai_reply as R
from broker import prom
from broker.http_auth import Auth
from broker.http_stream import stream_job, wait_final
from broker.local_job import LocalJob
from broker.openai_request import ApiError, chat_request, completion_request
from broker.web import WebView, login_page
from common import __version__
from common.frames import ANY_MODEL, MAX_BODY_BYTES, SERVICE_GENERATE

log = logging.getLogger(__name__)

DEFAULT_HTTP = "127.0.0.1:7580"
KEEPALIVE_S = 5.0      # SSE comment lines this often while the vote is pending


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "swarm"}


def error_response(err: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(err.to_map(), status=err.status, headers=headers)


class HttpApi:
    def __init__(self, broker, host: str, port: int, api_key: str | None = None,
                 keepalive_s: float = KEEPALIVE_S, page: bool = True):
        self.broker, self.host, self.port = broker, host, port
        self.auth = Auth(api_key)
        self.keepalive_s = keepalive_s
        self.web = WebView(broker, self.auth) if page else None
        self.runner: web.AppRunner | None = None
        self.url: str | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES,
                              middlewares=[self._errors, self._auth])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        if self.web is not None:
            self.web.add_routes(app)
        return app

    async def start(self) -> str:
        """Listen; returns the base URL (the port resolved when 0 was asked for)."""
        # a client that hangs up cancels its handler, whose `finally` cancels the job
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                    handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        log.info("OpenAI API on %s/v1", self.url)
        if self.web is not None:
            self.web.api_url = self.url
            log.info("live web page on %s/", self.url)
        return self.url

    async def stop(self) -> None:
        if self.web is not None:
            await self.web.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # -- middlewares ---------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return error_response(e)
        except web.HTTPException as e:  # aiohttp's own 404, 405, 413: in OpenAI's shape too
            if e.status < 400:
                raise
            kind = "not_found_error" if e.status == 404 else "invalid_request_error"
            return error_response(ApiError(e.status, f"{e.reason}: {request.method} "
                                           f"{request.path}", kind=kind))
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away: nobody to answer
        except Exception:  # a bug of ours: one clear error for the client, the trace in the log
            log.exception("error serving %s %s", request.method, request.path)
            return error_response(ApiError(500, "the broker failed to serve this request; "
                                           "its log has the details", kind="server_error"))

    @web.middleware
    async def _auth(self, request: web.Request, handler) -> web.StreamResponse:
        if not self.auth.allows(request):
            if request.path == "/" and request.method == "GET" and self.web is not None:
                return login_page()
            raise ApiError(401, "invalid API key: send 'Authorization: Bearer <key>' with "
                               "the broker's --api-key", code="invalid_api_key",
                               kind="authentication_error")
        return await handler(request)

    # -- routes --------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat_request(await _json(request)))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, completion_request(await _json(request)))

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list",
                                  "data": [_model(i) for i in self._model_ids()]})

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self._model_ids():
            raise self._not_served(name)
        return web.json_response(_model(name))

    async def health(self, request: web.Request) -> web.Response:
        slots = self.broker.registry.serving(SERVICE_GENERATE)
        stopping = self.broker.lifecycle.stopping  # a load balancer moves on while it drains
        status = "shutting down" if stopping else "ok" if slots else "no live worker"
        body = {"status": status, "workers": len(slots), "models": self._model_ids()[1:],
                "version": __version__}
        return web.json_response(body, status=200 if slots and not stopping else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = prom.render(self.broker)
        return web.Response(body=body, headers={"Content-Type": content_type})

    # -- one job -------------------------------------------------------------------------
    def _model_ids(self) -> list[str]:
        """`swarm` (every worker), then each model a live worker serves."""
        return [ANY_MODEL, *sorted(self.broker.registry.models(SERVICE_GENERATE))]

    def _not_served(self, name: str) -> ApiError:
        return ApiError(404, f"the model '{name}' is not served here: use one of "
                        f"{', '.join(self._model_ids())}", "model", "model_not_found",
                        kind="not_found_error")

    async def _generate(self, request: web.Request, api) -> web.StreamResponse:
        if api.model not in self._model_ids() and self.broker.registry.serving(SERVICE_GENERATE):
            raise self._not_served(api.model)  # with no worker at all, the job API says so
        job = LocalJob(self.broker, api.job)
        try:
            ended = job.ended_at_once()
            if ended is not None and "winner" not in ended:
                raise R.job_error(ended)  # a proper status, not a stream that fails at once
            if api.stream:
                return await stream_job(request, api, job, self.keepalive_s)
            final = await wait_final(job)
            if "winner" not in final:
                return error_response(R.job_error(final), R.swarm_headers(final))
            body = R.completion(api, final, int(time.time()))
            return web.json_response(body, headers=R.swarm_headers(final))
        finally:
            job.close()


async def _json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than Python goes
        raise ApiError(400, f"the request body is not valid JSON: {e}") from e
