"""One job of an in-process client, as the HTTP side sees it: an async stream of bodies.

The broker hands this client's replies (progress events, then exactly one FINAL) to a
sink on its own loop; they wait here in order until the handler reads them. Closing
before the FINAL cancels the job: an HTTP client that hangs up stops its candidates.
"""

from __future__ import annotations

import asyncio
from typing import Any

from common.bodies import GenerateRequest


class LocalJob:
    def __init__(self, broker, request: GenerateRequest) -> None:
        self.broker = broker
        self.queue: asyncio.Queue[tuple[dict[str, Any], bool]] = asyncio.Queue()
        self.final: dict[str, Any] | None = None  # the FINAL, once read
        self.ended = False                          # the FINAL has come (maybe not read yet)
        self.identity = broker.submit_local(self._sink, request)

    def _sink(self, body: dict[str, Any], final: bool) -> None:
        self.ended = self.ended or final
        self.queue.put_nowait((body, final))

    def ended_at_once(self) -> dict[str, Any] | None:
        """The FINAL if the job ended during submit (refused, or no slot could ever take it);
        what came before it is dropped: there is nothing to stream."""
        while self.ended and self.final is None:
            body, final = self.queue.get_nowait()
            if final:
                self.final = body
        return self.final

    async def next(self, timeout_s: float) -> tuple[dict[str, Any], bool] | None:
        """The next body and whether it is the FINAL; None if nothing came in timeout_s."""
        try:
            body, final = await asyncio.wait_for(self.queue.get(), timeout_s)
        except asyncio.TimeoutError:
            return None
        if final:
            self.final = body
        return body, final

    def close(self, reason: str = "the HTTP client went away") -> None:
        """Done with the job: if it still runs, it is cancelled."""
        self.broker.close_local(self.identity, reason)
