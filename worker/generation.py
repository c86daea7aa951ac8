"""The slot's generation thread and its bridge back to the session's event loop.

Apart from the session because it is the one part that runs off the loop: the backend
generates in the slot's own thread, and each piece and the outcome come back through the
connection's asyncio queue, so heartbeats keep flowing while the model works (paced:
worker/handoff.py). A request
whose connection is over is stopped at its next piece (`Abandoned`), so nothing of it
reaches the next connection; one the slot cannot read is answered with an error FINAL.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from common.bodies import ERROR_REQUEST, MAX_CANDIDATES, MAX_TOKENS, Chunk, Outcome, Task
from common.codec import unpack_body
from common.errors import ProtocolError
from worker.backend import Backend
from worker.handoff import INTERVAL_S, Handoff

log = logging.getLogger(__name__)

MAX_JOB_ID = 64  # characters of a bad request's job id echoed back in its error FINAL
MAX_CAND = MAX_CANDIDATES * 2
MAX_JOINED_CHARS = 64 * 1024  # of one PARTIAL that holds several pieces


@dataclass(slots=True)
class Work:
    client: bytes
    task: Task | None
    cancelled: threading.Event
    abandoned: bool = False  # its connection is over: its next piece ends it (see _generate)


class Abandoned(Exception):
    """Raised into the backend by `emit` once the request's connection is over."""


class SlotThread:
    """The slot's only generation thread; `kv` gives the fields of a line about the slot."""

    def __init__(self, backend: Backend, slot: int, kv: Callable[..., dict],
                 interval_s: float = INTERVAL_S):
        self.backend, self.interval_s = backend, interval_s  # pieces handed over at most so often
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"slot{slot}")
        self._kv = kv

    def start(self, client: bytes, task: Task, queue: asyncio.Queue) -> Work:
        """Generate `task` in the thread; its pieces and outcome go into `queue`."""
        work = Work(client, task, threading.Event())
        self.executor.submit(self._generate, work, asyncio.get_running_loop(), queue)
        return work

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _generate(self, work: Work, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        """Runs in the slot's thread; hands pieces and the outcome to the session's loop."""
        task, seq = work.task, 0
        handoff = Handoff(loop, queue.put_nowait, self.interval_s)

        def put(item, final: bool = False) -> None:
            try:
                (handoff.final if final else handoff.piece)(item)
            except RuntimeError:  # the loop is closed: the process is stopping
                work.cancelled.set()

        def emit(text: str) -> None:
            nonlocal seq
            if work.abandoned:  # a backend that does not check `cancelled` must not keep
                raise Abandoned  # the slot's only thread from the next connection's requests
            put((work, Chunk(task.job, task.cand, seq, text), False))
            seq += 1

        if work.cancelled.is_set():
            outcome = Outcome(task.job, task.cand, error="cancelled before it started")
        else:
            try:
                outcome = self.backend.generate(task, emit, work.cancelled)
            except Abandoned:
                log.info("candidate stopped: its connection is over",
                         extra=self._kv(job=task.job, cand=task.cand))
                return
            except Exception as e:  # the model failed on this input: say so, keep serving
                log.warning("generation failed: %s", e, extra=self._kv(job=task.job,
                                                                        cand=task.cand))
                log.debug("generation failure in detail", exc_info=True, extra=self._kv(
                    job=task.job, cand=task.cand))
                outcome = Outcome(task.job, task.cand, error=f"generation failed: {e}")
        self._log_outcome(task, outcome)
        put((work, outcome, True), final=True)

    def _log_outcome(self, task: Task, outcome: Outcome) -> None:
        """One line a candidate served: how it ended, or why it could not be served."""
        if outcome.error is None:
            log.info("candidate done: %s tokens (%s)", outcome.usage.get("completion_tokens", "?"),
                     outcome.finish_reason,
                     extra=self._kv(job=task.job, cand=task.cand,
                                    took_s=_rounded(outcome.timings.get("total_s"))))
        elif outcome.error_kind == ERROR_REQUEST:  # a failed generation said so already
            log.info("candidate cannot be served: %s", outcome.error,
                     extra=self._kv(job=task.job, cand=task.cand))


def coalesce(items: list[tuple]) -> list[tuple]:
    """The (work, piece or outcome, final) items waiting together, with each run of one
    request's pieces joined into one Chunk (text joined, the first's seq, tokens summed)
    within MAX_JOINED_CHARS and MAX_TOKENS; everything keeps its order."""
    out: list[tuple] = []
    run: list[Chunk] = []  # the pieces joined into out[-1]
    chars = tokens = 0

    def close() -> None:
        if len(run) > 1:
            first = run[0]
            out[-1] = (out[-1][0], Chunk(first.job, first.cand, first.seq,
                                         "".join(c.text for c in run), tokens), False)

    for item in items:
        work, piece, final = item
        if not final and run and work is out[-1][0] and \
                chars + len(piece.text) <= MAX_JOINED_CHARS and tokens + piece.tokens <= MAX_TOKENS:
            run.append(piece)
            chars, tokens = chars + len(piece.text), tokens + piece.tokens
            continue
        close()
        out.append(item)
        run, chars, tokens = ([], 0, 0) if final else ([piece], len(piece.text), piece.tokens)
    close()
    return out


def refused(client: bytes, body: tuple[bytes, ...], error: str, queue: asyncio.Queue) -> Work:
    """A REQUEST the slot will not serve: its error FINAL goes into `queue` at once."""
    work = Work(client, None, threading.Event())
    queue.put_nowait((work, refusal(body, error), True))
    return work


def refusal(body: tuple[bytes, ...], error: str) -> Outcome:
    """The error FINAL for a REQUEST we cannot read; its job and candidate are echoed back
    only where they can be ones."""
    try:
        m = unpack_body(body)
    except ProtocolError:
        m = {}
    job, cand = m.get("job"), m.get("cand")
    job = job if isinstance(job, str) and len(job) <= MAX_JOB_ID else ""
    ok = isinstance(cand, int) and not isinstance(cand, bool) and 0 <= cand <= MAX_CAND
    return Outcome(job, cand if ok else 0, error=error)


def _rounded(seconds) -> float | None:
    return round(seconds, 3) if isinstance(seconds, (int, float)) else None
