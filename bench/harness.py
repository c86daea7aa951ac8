"""Real processes for benchmarks: a broker and synthetic workers on loopback, and how to
wait for them and read what the broker process spent (CPU seconds, peak memory).

    with Swarm(slots=[3, 3]) as swarm:           # a broker and two 3-slot synthetic workers
        ... SwarmClient(swarm.endpoint) ...
        swarm.broker_usage()                     # {"cpu_s": ..., "rss_mb": ..., "peak_mb": ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client.client import SwarmClient  # noqa: E402

BIN = Path(sys.executable).parent
QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(procs: Sequence[subprocess.Popen], timeout_s: float = 15) -> None:
    """SIGINT each (a graceful stop), then kill whatever is still there after the timeout."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def synthetic(endpoint: str, name: str, slots: int, tokens: int = 16, token_delay_s: float = 0.0,
              extra: Sequence[str] = ()) -> subprocess.Popen:
    """A synthetic worker process (worker/synthetic.py: no model, real session)."""
    return subprocess.Popen([sys.executable, "-m", "worker.synthetic", "--broker", endpoint,
                             "--name", name, "--slots", str(slots), "--tokens", str(tokens),
                             "--token-delay-s", str(token_delay_s), *extra],
                            cwd=ROOT, **QUIET)


async def wait_for_slots(endpoint: str, slots: int, timeout_s: float = 120) -> None:
    """Until the broker counts `slots` live generate slots (swarm.status)."""
    client = SwarmClient(endpoint, retries=0)
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            status = await client.status(2.0)
            seen = sum(p.get("slots", 1) for p in status["peers"] if p.get("live", True))
            if seen >= slots:
                return
        await asyncio.sleep(0.2)
    raise SystemExit(f"only {seen} of {slots} slots registered at {endpoint}")


class Swarm:
    """A broker process and synthetic worker processes, one per entry of `slots`."""

    def __init__(self, slots: Sequence[int], tokens: int = 16, token_delay_s: float = 0.0,
                 broker_args: Sequence[str] = (), worker_args: Sequence[str] = (),
                 broker_prefix: Sequence[str] = (), http: bool = False):
        self.broker_prefix = list(broker_prefix)  # e.g. a profiler's command line
        # the broker's HTTP server (OpenAI API, web view) on a free loopback port, or off
        self.http = f"127.0.0.1:{free_port()}" if http else None
        self.slots, self.tokens, self.token_delay_s = list(slots), tokens, token_delay_s
        self.broker_args, self.worker_args = list(broker_args), list(worker_args)
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.broker: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._peak_mb = 0.0

    def __enter__(self) -> "Swarm":
        self.broker = subprocess.Popen(
            [*self.broker_prefix, str(BIN / "swarm-broker"), "--bind", self.endpoint,
             "--http", self.http or "off", "--no-mdns",
             "--state-dir", "off", "--max-jobs", "100000", "--max-candidates", "1000000",
             *self.broker_args], cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **QUIET)
        self.workers = [synthetic(self.endpoint, f"synth{i}", n, self.tokens, self.token_delay_s,
                                  self.worker_args) for i, n in enumerate(self.slots)]
        try:
            asyncio.run(wait_for_slots(self.endpoint, sum(self.slots)))
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def http_url(self) -> str | None:
        """http://HOST:PORT of the broker's HTTP server, or None when it is off."""
        return f"http://{self.http}" if self.http else None

    def __exit__(self, *_exc) -> None:
        stop([*self.workers, *([self.broker] if self.broker else [])])

    def broker_usage(self) -> dict[str, float]:
        """The broker process's CPU seconds so far, its RSS now and its peak RSS (MB)."""
        proc = psutil.Process(self.broker.pid)
        cpu = proc.cpu_times()
        rss = proc.memory_info().rss / 2**20
        peak = _peak_rss_mb(self.broker.pid)
        return {"cpu_s": cpu.user + cpu.system, "rss_mb": rss, "peak_mb": max(peak, rss)}


def _peak_rss_mb(pid: int) -> float:
    """VmHWM (the process's peak resident set) on Linux, else 0."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0
