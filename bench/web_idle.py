"""Web view, idle cost: the web view costs the broker nothing measurable when nobody watches.

Three brokers side by side, each with its own synthetic workers (the same slots): (a) `off`,
--http off; (b) `idle`, --http on and nobody on the page; (c) `watched`, --http on and one
watcher reading GET /ui/events (a plain http.client reader in a thread of this process,
reading and discarding, counting the messages). Each round runs one batch of jobs on each
broker in turn (the order rotated every round: these machines are noisy), all jobs of a
batch sent at once by one raw DEALER client (stream "progress": every token relayed to the
client, every piece its own PARTIAL). Measured per batch: jobs and tokens per second at the
client, and the broker process's CPU per job (its CPU time after the last FINAL minus
before the first REQUEST); before the rounds, every broker's CPU while nothing runs, over
one shared idle window. Goal, for (b): throughput at least 0.95 of (a), CPU per job at most
1.05 of it; (c) shows what one watcher costs.

    .venv/bin/python bench/web_idle.py [--quick] [--rounds 7] [--jobs 1000] [--tokens 256]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Swarm  # noqa: E402
from bench.report import plot, table  # noqa: E402
from common import frames as F  # noqa: E402
from common.bodies import GenerateRequest, Sampling  # noqa: E402
from common.codec import pack, unpack  # noqa: E402
from common.messages import ClientRequest  # noqa: E402

CONFIGS = ("off", "idle", "watched")
SLOTS = [4, 4]            # two synthetic worker processes per broker
CANDIDATES = 3
GOAL_THROUGHPUT, GOAL_CPU = 0.95, 1.05
TIMEOUT_S = 120.0


class Watcher:
    """One reader of GET /ui/events in a thread: reads everything, keeps only counts."""

    def __init__(self, base_url: str):
        self.url = urlsplit(base_url)
        self.messages = self.bytes = 0
        self.tokens_seen = False  # a candidate's token event came through (it watched jobs)
        self.ended: str | None = None  # why the stream ended before stop(), if it did
        self._conn: http.client.HTTPConnection | None = None
        self._first = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 30) -> None:
        """Connect (the HTTP server may still be starting) and wait for the snapshot."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=TIMEOUT_S)
            try:
                self._conn.request("GET", "/ui/events", headers={"Accept": "text/event-stream"})
                response = self._conn.getresponse()
                break
            except OSError:
                self._conn.close()
                if time.monotonic() > deadline:
                    raise SystemExit(f"the broker's HTTP server at {self.url.netloc} never answered")
                time.sleep(0.2)
        if response.status != 200:
            raise SystemExit(f"GET /ui/events answered {response.status}: this broker has no "
                             "web view's event stream (is the lead's backend merged?)")
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()
        if not self._first.wait(timeout_s):
            raise SystemExit("the event stream sent no snapshot")

    def _read(self, response: http.client.HTTPResponse) -> None:
        rest = b""
        try:
            while chunk := response.read1(65536):
                self.bytes += len(chunk)
                self.tokens_seen = self.tokens_seen or b'"token"' in chunk
                *messages, rest = (rest + chunk).split(b"\n\n")
                self.messages += sum(1 for m in messages if b"data:" in m)
                if self.messages:
                    self._first.set()
            self.ended = "the broker closed the stream"
        except (OSError, ValueError, http.client.HTTPException) as e:
            self.ended = f"the stream broke: {e}"

    def stop(self) -> None:
        """End the stream under the reader (it sees its end), then close the connection."""
        if self._conn is None:
            return
        if self._conn.sock is not None:
            with contextlib.suppress(OSError):
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        self._conn.close()


def batch(endpoint: str, jobs: int, tokens: int) -> tuple[float, int, int]:
    """`jobs` jobs sent at once on one DEALER, every reply read: (seconds from the first
    send to the last FINAL, tokens in the FINALs, messages read)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 0)  # the client never makes the broker wait
    sock.connect(endpoint)
    body = pack(GenerateRequest(Sampling(prompt="web idle", max_tokens=tokens),
                                candidates=CANDIDATES, stream="progress", quorum=False,
                                timeout_s=TIMEOUT_S).to_map())
    try:
        start = time.perf_counter()
        for _ in range(jobs):
            sock.send_multipart(ClientRequest(F.SERVICE_GENERATE, (body,)).to_frames())
        finals, read, got = 0, 0, 0
        while finals < jobs:
            if not sock.poll(int(TIMEOUT_S * 1000)):
                raise SystemExit(f"no reply within {TIMEOUT_S:g} s ({finals} of {jobs} jobs done)")
            frames = sock.recv_multipart()
            read += 1
            if frames[1] == F.C_FINAL:
                finals += 1
                final = unpack(frames[3])
                got += sum(c.get("tokens") or 0 for c in final.get("candidates", []) if c.get("ok"))
        return time.perf_counter() - start, got, read
    finally:
        sock.close()


def one_batch(swarm: Swarm, jobs: int, tokens: int) -> dict[str, float]:
    before = swarm.broker_usage()["cpu_s"]
    took, got, read = batch(swarm.endpoint, jobs, tokens)
    cpu = swarm.broker_usage()["cpu_s"] - before
    expected = jobs * CANDIDATES * tokens
    if got != expected:
        raise SystemExit(f"the broker returned {got} of {expected} tokens")
    return {"jobs_s": jobs / took, "tokens_s": got / took, "cpu_ms_job": cpu / jobs * 1000,
            "messages": read}


def idle_cpu(swarms: dict[str, Swarm], idle_s: float) -> dict[str, float]:
    """Every broker's CPU milliseconds per second over one shared window with no jobs."""
    before = {name: s.broker_usage()["cpu_s"] for name, s in swarms.items()}
    time.sleep(idle_s)
    return {name: (s.broker_usage()["cpu_s"] - before[name]) / idle_s * 1000
            for name, s in swarms.items()}


def measure(rounds: int, jobs: int, tokens: int, idle_s: float) -> tuple[dict, dict, int]:
    """(per config: its batches, per config: idle CPU ms/s, the watcher's messages)."""
    args = ["--stream-interval-s", "0"]
    with contextlib.ExitStack() as stack:
        swarms = {name: stack.enter_context(Swarm(SLOTS, tokens, 0.0, worker_args=args,
                                                  http=name != "off"))
                  for name in CONFIGS}
        watcher = Watcher(swarms["watched"].http_url)
        stack.callback(watcher.stop)
        watcher.start()
        for name in CONFIGS:  # a warm-up batch each, not counted
            one_batch(swarms[name], jobs, tokens)
        idle = idle_cpu(swarms, idle_s)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
        for r in range(rounds):
            for name in CONFIGS[r % 3:] + CONFIGS[:r % 3]:
                runs[name].append(one_batch(swarms[name], jobs, tokens))
            print(f"round {r}: " + "  ".join(
                f"{name} {runs[name][-1]['jobs_s']:.1f} jobs/s {runs[name][-1]['cpu_ms_job']:.2f} "
                f"ms/job" for name in CONFIGS), flush=True)
        if watcher.ended or not watcher.tokens_seen:
            raise SystemExit("the watcher did not watch the jobs to the end: "
                             f"{watcher.ended or 'no token event came'}")
        return runs, idle, watcher.messages


def show(runs: dict, idle: dict, watched: int, rounds: int, jobs: int, tokens: int) -> None:
    med = {name: {k: statistics.median(b[k] for b in runs[name])
                  for k in ("jobs_s", "tokens_s", "cpu_ms_job", "messages")} for name in CONFIGS}
    base = med["off"]
    ratio = {name: (med[name]["jobs_s"] / base["jobs_s"], med[name]["cpu_ms_job"] / base["cpu_ms_job"])
             for name in CONFIGS}
    rows = [[name, med[name]["jobs_s"], med[name]["tokens_s"], ratio[name][0],
             med[name]["cpu_ms_job"], ratio[name][1], idle[name],
             watched if name == "watched" else "-",
             "-" if name != "idle" else ("yes" if ratio[name][0] >= GOAL_THROUGHPUT
                                         and ratio[name][1] <= GOAL_CPU else "NO")]
            for name in CONFIGS]
    table(f"Web view, idle cost: {jobs} jobs x {CANDIDATES} candidates x {tokens} tokens a batch, "
          f"medians of {rounds} interleaved rounds (ratios vs off; goal for idle: throughput "
          f">= {GOAL_THROUGHPUT}, CPU/job <= {GOAL_CPU})",
          ["broker", "jobs/s", "tokens/s", "throughput ratio", "CPU ms/job", "CPU ratio",
           "idle CPU ms/s", "watcher msgs", "goal"], rows)
    plot("web_idle", "Web view: broker cost vs --http off", list(CONFIGS),
         {"throughput ratio": [ratio[n][0] for n in CONFIGS],
          "CPU per job ratio": [ratio[n][1] for n in CONFIGS]},
         ylabel="ratio to --http off", kind="bar", goal=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and jobs (make bench)")
    parser.add_argument("--rounds", type=int, default=None, help="[7; --quick: 3]")
    parser.add_argument("--jobs", type=int, default=None, help="jobs a batch [1000; --quick: 400]")
    parser.add_argument("--tokens", type=int, default=256, help="tokens a candidate")
    parser.add_argument("--idle-s", type=float, default=None, help="idle window [20; --quick: 5]")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    jobs = args.jobs or (400 if args.quick else 1000)
    idle_s = args.idle_s or (5.0 if args.quick else 20.0)
    runs, idle, watched = measure(rounds, jobs, args.tokens, idle_s)
    show(runs, idle, watched, rounds, jobs, args.tokens)


if __name__ == "__main__":
    main()
