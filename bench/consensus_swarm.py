"""A real swarm for the accuracy benchmark: a swarm-broker and N swarm-worker subprocesses on
loopback (no mDNS, no HTTP, a free port), and one generate job per call, as a user sends it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.consensus_data import STOP, Item, messages, prompt
from client.client import SwarmClient
from common.bodies import GenerateRequest, Sampling
from common.errors import SwarmError

BIN = Path(sys.executable).parent
READY_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_swarm(workers: int, threads: int, log_dir: Path) -> Iterator[SwarmClient]:
    """Broker + `workers` one-slot workers; yields a client once every worker is live."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    cmds = [[str(BIN / "swarm-broker"), "--bind", endpoint, "--no-mdns", "--http", "off"]]
    cmds += [[str(BIN / "swarm-worker"), "--broker", endpoint, "--name", f"bench{i}", "--no-mdns",
              "--instances", "1", "--threads", str(threads)] for i in range(workers)]
    procs = []
    try:
        for i, cmd in enumerate(cmds):
            log = open(log_dir / f"proc{i}.log", "wb")
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL))
        client = SwarmClient(endpoint)
        _wait_live(client, workers)
        yield client
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_live(client: SwarmClient, workers: int) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        with contextlib.suppress(SwarmError, OSError):
            status = asyncio.run(client.status(2))
            if sum(1 for p in status["peers"] if p.get("live")) >= workers:
                return
        time.sleep(0.3)
    raise SwarmError(f"the benchmark's {workers} workers did not all register within {READY_S:g} s")


@dataclass(frozen=True, slots=True)
class Setting:
    """How a benchmark job samples: what the bench's flags set."""

    temperature: float = 0.7
    top_p: float = 1.0
    spread: float = 0.0
    greedy_cand: bool = False
    shuffle: bool = False      # a prompt-order ensemble: the examples reordered per candidate
    max_tokens: int = 24
    style: str = "show"
    format: str = "chat"


@dataclass(frozen=True, slots=True)
class JobResult:
    final: dict[str, Any]
    wall_s: float

    @property
    def texts(self) -> list[str]:
        return [c.get("text") or "" for c in self.final.get("candidates", [])]


def request(item: Item, setting: Setting, k: int, strategy: str, seed: int,
            quorum: bool = True, temperature: float | None = None) -> GenerateRequest:
    """One job for one item: the few-shot prompt as chat turns (or a raw Q/A prompt)."""
    temp = setting.temperature if temperature is None else temperature
    text = dict(messages=messages(item, setting.style)) if setting.format == "chat" else \
        dict(prompt=prompt(item, setting.style))
    sampling = Sampling(**text, max_tokens=setting.max_tokens, temperature=temp, stop=STOP,
                        top_p=setting.top_p, logprobs=True)
    return GenerateRequest(sampling, candidates=k, strategy=strategy, seed=seed, timeout_s=300,
                           spread=setting.spread if temperature is None else 0.0,
                           greedy=setting.greedy_cand and temperature is None, quorum=quorum,
                           shuffle=setting.shuffle and temperature is None)


def run_job(client: SwarmClient, req: GenerateRequest) -> JobResult:
    start = time.perf_counter()
    final = asyncio.run(client.generate(req, 300))
    return JobResult(final, time.perf_counter() - start)
