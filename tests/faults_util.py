"""Helpers for the fault tests with real processes: a synthetic worker process, and waiting
on what `swarm-ask --peers --json` shows (an observable state, never a sleep)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable

from tests.conftest import BIN, FAST_HB, Procs, ask


def synthetic(procs: Procs, port: int, name: str, *extra: str) -> subprocess.Popen:
    """A real worker process (`python -m worker.synthetic`) with no model: fast and exact."""
    return procs.start("python", "-m", "worker.synthetic", "--broker", f"tcp://127.0.0.1:{port}",
                       "--name", name, "--heartbeat-s", FAST_HB, "--reconnect-s", "0.1", *extra,
                       name=name)


def peers(port: int) -> dict[str, dict]:
    """The broker's peers by name, as `swarm-ask --peers --json` shows them ({} if it fails)."""
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--peers", "--json", "--timeout-s", "5",
            "--retries", "0")
    return {p["name"]: p for p in json.loads(r.stdout)} if r.returncode == 0 else {}


def wait_for(port: int, what: str, ok: Callable[[dict[str, dict]], bool],
             timeout_s: float = 60.0) -> dict[str, dict]:
    """Poll the peers until `ok(peers)`; the timeout only bounds a failure."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, dict] = {}
    while time.monotonic() < deadline:
        seen = peers(port)
        if ok(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"never saw {what}; the peers were: {json.dumps(seen)[:2000]}")


def start_ask(*args: str) -> subprocess.Popen:
    """swarm-ask in the background, its stdout and stderr read by the test."""
    return subprocess.Popen([str(BIN / "swarm-ask"), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})

