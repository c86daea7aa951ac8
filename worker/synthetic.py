"""A synthetic backend and a worker process around it, for fault tests and benchmarks.

No model: each candidate is `tokens` pieces, one every `token_delay_s`, spelt from the
job's seed so two candidates of one seed agree (`jitter` J: each pause is drawn, from the
seed too, between 1 - J and 1 + J times the delay, so slots drift out of step). With an
`answer`, the last piece states it ("The answer is 42."), so candidates of any seed agree on
it in a majority vote (the early quorum benchmark's workers). It runs through the real
worker session (READY, heartbeats, CANCEL, reconnects), so a process of it is a real peer
that answers fast. `ignore_cancel` makes it a rude peer: it hears CANCEL and goes on
generating. `record` (a file descriptor) makes each slot append, per candidate, one line a
benchmark reads: `cand JOB CAND TOTAL_S START` (its own generation time, and when it began)
and `gap END START` (monotonic seconds from its previous candidate's end to this one's
start: the FINAL out, the next REQUEST in).

    python -m worker.synthetic --broker tcp://127.0.0.1:7555 --name fast --slots 3
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time

import click

from common import frames as F
from common import logs
from common.bodies import Outcome, Task
from common.cli_types import connect_endpoint, seconds
from common.profile import MAX_LIVENESS
from common.runner import run_until_signalled
from common.sdnotify import Notifier
from worker.node import SHUTDOWN_GRACE_S, WorkerNode, node_profile
from worker.handoff import INTERVAL_S as STREAM_INTERVAL_S, MAX_STREAM_INTERVAL_S
from worker.session import SessionConfig

log = logging.getLogger(__name__)

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
ANSWER_CHARS = 60   # an --answer is one short line, as a majority vote extracts it


class SyntheticBackend:
    name = "synthetic"
    n_ctx = 8192

    def __init__(self, tokens: int = 8, token_delay_s: float = 0.0, ignore_cancel: bool = False,
                 model: str = "synthetic", answer: str | None = None,
                 record: int | None = None, jitter: float = 0.0):
        self.tokens, self.token_delay_s, self.jitter = tokens, token_delay_s, jitter
        self.ignore_cancel, self.model, self.answer = ignore_cancel, model, answer
        self.record = record          # an O_APPEND file descriptor, or None
        self._ended: float | None = None

    def piece(self, seed: int, i: int, count: int) -> str:
        """The i-th of `count` pieces: a word spelt from the seed; the last states the answer."""
        if self.answer is not None and i == count - 1:
            return f"\nThe answer is {self.answer}."
        return WORDS[(seed + i) % len(WORDS)] + " "

    def generate(self, task: Task, emit, cancelled: threading.Event) -> Outcome:
        count = min(self.tokens, task.sampling.max_tokens)
        start, pieces, first = time.monotonic(), [], None
        pace = random.Random(task.seed * 7919 + task.cand)
        if self.record is not None and self._ended is not None:
            os.write(self.record, f"gap {self._ended:.6f} {start:.6f}\n".encode())
        for i in range(count):
            if cancelled.is_set() and not self.ignore_cancel:
                break
            if self.token_delay_s:
                time.sleep(self.token_delay_s * (1 + self.jitter * pace.uniform(-1, 1)))
            piece = self.piece(task.seed, i, count)
            first = first if first is not None else time.monotonic() - start
            pieces.append(piece)
            emit(piece)
        stopped = cancelled.is_set() and not self.ignore_cancel
        took = time.monotonic() - start
        if self.record is not None:
            os.write(self.record, f"cand {task.job} {task.cand} {took:.6f} {start:.6f}\n".encode())
            self._ended = time.monotonic()
        return Outcome(task.job, task.cand, "".join(pieces),
                       "cancelled" if stopped else "length",
                       usage={"prompt_tokens": 1, "completion_tokens": len(pieces)},
                       timings={"ttft_s": first or took, "total_s": took})


def _answer(_ctx, _param, value: str | None) -> str | None:
    if value is not None and not (value.strip() and value.isprintable()
                                  and len(value) <= ANSWER_CHARS):
        raise click.BadParameter(f"must be one printable line of 1 to {ANSWER_CHARS} characters")
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--broker", default=F.DEFAULT_BROKER_CONNECT, callback=connect_endpoint,
              show_default=True, help="Broker endpoint.")
@click.option("--name", default="synthetic", show_default=True, help="Peer name.")
@click.option("--slots", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--tokens", type=click.IntRange(0, 1_000_000), default=8, show_default=True,
              help="Pieces per candidate (at most the job's max_tokens).")
@click.option("--token-delay-s", type=seconds(lo=0.0), default=0.0, show_default=True,
              help="Pause before each piece.")
@click.option("--jitter", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Each pause is drawn between (1 - J) and (1 + J) times the delay.")
@click.option("--ignore-cancel", is_flag=True, help="Hear CANCEL and keep generating.")
@click.option("--answer", callback=_answer, metavar="TEXT",
              help="End each candidate with \"The answer is TEXT.\" (one short line).")
@click.option("--record", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Append each candidate's own time and each slot's idle gap to this file "
                   "(for benchmarks).")
@click.option("--stream-interval-s", type=seconds(lo=0.0, hi=MAX_STREAM_INTERVAL_S),
              default=STREAM_INTERVAL_S, show_default=True,
              help="Send streamed pieces at most this often, joined (0: each piece at once).")
@click.option("--heartbeat-s", type=seconds(), default=F.DEFAULT_HEARTBEAT_S, show_default=True)
@click.option("--liveness", type=click.IntRange(1, MAX_LIVENESS), default=F.DEFAULT_LIVENESS,
              show_default=True)
@click.option("--reconnect-s", type=seconds(hi=F.RECONNECT_MAX_S), default=F.RECONNECT_MIN_S,
              show_default=True)
@click.option("--shutdown-grace-s", type=seconds(), default=SHUTDOWN_GRACE_S, show_default=True,
              help="On SIGTERM, how long a slot may take to finish its candidate.")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default=logs.TEXT,
              show_default=True, help="Log lines as text (key=value fields) or JSON objects.")
@click.option("-v", "--verbose", count=True)
def main(broker, name, slots, tokens, token_delay_s, jitter, ignore_cancel, answer, record,
         stream_interval_s, heartbeat_s, liveness, reconnect_s, shutdown_grace_s, log_format, verbose):
    """Serve synthetic answers to a broker (no model; for tests and benchmarks)."""
    logs.setup(verbose + 1, fmt=log_format)
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if record else None
    backends = [SyntheticBackend(tokens, token_delay_s, ignore_cancel, answer=answer,
                                 record=fd, jitter=jitter)
                for _ in range(slots)]
    profile = node_profile(name, backends[0], slots, True, socket.gethostname())
    config = SessionConfig(broker, heartbeat_s=heartbeat_s, liveness=liveness,
                           reconnect_min_s=reconnect_s,
                           reconnect_max_s=max(reconnect_s, F.RECONNECT_MAX_S),
                           stream_interval_s=stream_interval_s)
    node = WorkerNode(config, profile, backends, notifier=Notifier.from_env(),
                      shutdown_grace_s=shutdown_grace_s)
    run_until_signalled(node.run(), stop=node.shutdown)
    node.close()


if __name__ == "__main__":
    main()
