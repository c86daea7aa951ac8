"""Shared fixtures: real loopback sockets, real subprocesses, the real bundled model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

BIN = Path(sys.executable).parent
FAST_HB = "0.2"  # injected heartbeat interval: failures show within 0.6 s


@pytest.fixture(scope="session", autouse=True)
def _loopback_mdns_and_own_state(tmp_path_factory):
    """Every program a test starts keeps mDNS on loopback, in a swarm of its own, and its
    machine id in a scratch directory, never the user's."""
    saved = {k: os.environ.get(k) for k in ("SWARM_MDNS_INTERFACES", "SWARM_STATE_DIR",
                                            "SWARM_NAME")}
    os.environ["SWARM_MDNS_INTERFACES"] = "127.0.0.1"
    # a swarm of this run's own: two test runs at once (or a user's swarm) never meet
    os.environ["SWARM_NAME"] = f"test-{os.getpid()}"
    os.environ["SWARM_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _own_state_and_config(tmp_path_factory, monkeypatch):
    """Each test's programs keep their state (metrics database, machine id) and look for
    their default config files in directories of that test's own, never another test's."""
    monkeypatch.setenv("SWARM_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("SWARM_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)  # systemd's, where a test runs under it
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro, timeout_s: float = 30.0):
    """Run one async test body with a hard timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


@pytest.fixture
def ctx():
    """A context whose sockets must all be closed by the test: a leak fails it."""
    c = zmq.asyncio.Context()
    yield c
    leaked = [s for s in list(c._sockets) if not s.closed]
    c.destroy(linger=0)
    assert not leaked, f"{len(leaked)} socket(s) left open"


@pytest.fixture(scope="session")
def model_path() -> Path:
    from worker.model_files import bundled_model
    return bundled_model(progress=False)


class Procs:
    """Subprocesses started by a test, all killed at its end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        proc.log_path = self.tmp / f"{name}.log"
        self.procs.append(proc)
        return proc

    def broker(self, port: int, *extra: str) -> subprocess.Popen:
        http = () if "--http" in extra else ("--http", "off")  # never the shared default port
        return self.start("swarm-broker", "--bind", f"tcp://127.0.0.1:{port}", "--heartbeat-s",
                          FAST_HB, *http, *extra, name=f"broker-{port}")

    def worker(self, port: int, name: str, *extra: str) -> subprocess.Popen:
        return self.start("swarm-worker", "--broker", f"tcp://127.0.0.1:{port}", "--name", name,
                          "--heartbeat-s", FAST_HB, "--reconnect-s", "0.1", *extra, name=name)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.stop_all()


def ask(*args: str, timeout_s: float = 180.0, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "swarm-ask"), *args], capture_output=True, text=True,
                          timeout=timeout_s, input=input)


def wait_for_peers(port: int, names: set[str], timeout_s: float = 30.0) -> list[dict]:
    """Poll swarm.status until every named peer is live; returns the peer list."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = ask("--broker", f"tcp://127.0.0.1:{port}", "--peers", "--json", "--timeout-s", "2")
        if r.returncode == 0:
            peers = json.loads(r.stdout)
            if names <= {p["name"] for p in peers if p["live"]}:
                return peers
        time.sleep(0.2)
    raise AssertionError(f"peers {names} never became live on port {port}")
