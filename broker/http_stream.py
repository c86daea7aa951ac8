"""Streaming a job to an OpenAI client as server-sent events, and waiting for one.

The stream opens at once with the assistant's role, so a client knows the request was
taken. While the candidates run and the vote is pending, an SSE comment line goes out
every `keepalive_s` (clients and proxies that time out on silence stay put). With strategy
`first` and one choice, the first candidate to speak is streamed live, token by token;
otherwise the winner is sent once the vote is in. Then each choice's finish_reason (with
the vote summary, `x_swarm`), the usage chunk when asked for, and `data: [DONE]`.
A client that hangs up ends the job: aiohttp cancels its handler, which cancels the job.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from aiohttp import web

from broker import openai_reply as R
from broker.local_job import LocalJob
from broker.openai_request import ApiError, ApiRequest

log = logging.getLogger(__name__)

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}


async def wait_final(job: LocalJob) -> dict[str, Any]:
    """The job's FINAL (a client that hangs up cancels this wait, and so the job)."""
    while job.final is None:
        await job.next(3600.0)
    return job.final


class _Live:
    """The one candidate streamed live (strategy `first`): what it has sent so far."""

    def __init__(self) -> None:
        self.cand: int | None = None
        self.text = ""
        self.broken = False  # it failed or restarted after it had spoken: no more live text

    def feed(self, event: dict[str, Any]) -> str:
        """The text to stream now for this progress event."""
        kind, cand = event.get("event"), event.get("cand")
        if self.broken:
            return ""
        if kind == "token" and self.cand is None:
            self.cand = cand
        if cand != self.cand:
            return ""
        if kind == "token":
            text = str(event.get("text", ""))
            self.text += text
            return text
        if kind in ("retry", "failed", "cancelled"):
            self.broken = True
        return ""


async def stream_job(request: web.Request, api: ApiRequest, job: LocalJob,
                     keepalive_s: float) -> web.StreamResponse:
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    created = int(time.time())
    rid = R.reply_id(api, os.urandom(6).hex())  # the job's id is not known yet
    live = _Live() if api.n == 1 and api.job.stream == "live" \
        and not api.job.sampling.calls_tools else None

    async def send(obj: dict[str, Any] | str) -> None:
        data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        await resp.write(f"data: {data}\n\n".encode())

    first = [R.delta_choice(api, i, role="assistant", content="") if api.chat
             else R.delta_choice(api, i) for i in range(api.n)]
    await send(R.chunk(api, rid, created, first))
    while job.final is None:
        item = await job.next(keepalive_s)
        if item is None:
            await resp.write(b": keep-alive\n\n")
            continue
        body, final = item
        if not final and live is not None and (text := live.feed(body)):
            await send(R.chunk(api, rid, created, [R.delta_choice(api, 0, text)]))
    await _finish(api, job.final, rid, created, live, send)
    await send("[DONE]")
    await resp.write_eof()
    return resp


async def _finish(api: ApiRequest, final: dict[str, Any], rid: str, created: int,
                  live: _Live | None, send) -> None:
    """The answer's end: the rest of each choice, its finish_reason, usage."""
    if "winner" not in final:
        await send(_error(R.job_error(final), final))
        return
    job = final["job"]
    chosen = R.choices_of(api, final)
    for i, cand in enumerate(chosen):
        if cand.get("tool_calls") and api.chat:
            await send(R.chunk(api, rid, created, [R.delta_choice(
                api, i, tool_calls=R.call_deltas(job, cand))]))
            continue
        text = cand.get("text", "")
        if live is not None and live.text.strip():  # blanks sent before are harmless
            if live.cand != cand["cand"] or not text.startswith(live.text):
                await send(_error(ApiError(502, "the candidate streamed live failed after it "
                                           "had begun; the winner differs from what was sent",
                                           code="stream_broken", kind="upstream_error"), final))
                return
            text = text[len(live.text):]
        if text:
            await send(R.chunk(api, rid, created, [R.delta_choice(api, i, text)]))
    ends = [R.delta_choice(api, i, finish=R.finish_reason(c)) for i, c in enumerate(chosen)]
    await send(R.chunk(api, rid, created, ends, x_swarm=R.x_swarm(final)))
    if api.include_usage:
        await send(R.chunk(api, rid, created, [], usage=R.usage(chosen, final)))


def _error(err: ApiError, final: dict[str, Any]) -> dict[str, Any]:
    body = err.to_map()
    body["x_swarm"] = R.x_swarm(final)
    return body
