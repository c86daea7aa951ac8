"""Running as a service, with real processes: what systemd is told (a fake NOTIFY_SOCKET),
and a graceful stop on SIGTERM of the broker and of a worker."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request

import pytest
import zmq

from common import frames as F
from tests.conftest import free_port
from tests.faults_util import synthetic
from tests.lifecycle_util import Client, NotifySocket, broker_status, wait_until

pytestmark = pytest.mark.timeout(110)


def _peer(ctx, port: int, name: str) -> dict | None:
    return next((p for p in broker_status(ctx, port)["peers"] if p["name"] == name), None)


def _live(ctx, port: int, name: str) -> bool:
    peer = _peer(ctx, port, name)
    return bool(peer and peer["live"])


def _first_token(client: Client) -> dict:
    return client.until(lambda final, body: not final and body.get("event") == "token")


def _job(max_tokens: int = 1000, **extra) -> dict:
    return {"prompt": "go", "max_tokens": max_tokens, "candidates": 1, "stream": "progress",
            "timeout_s": 100, **extra}


def _log(proc) -> str:
    return proc.log_path.read_text(errors="replace")


@pytest.fixture
def zctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_the_broker_tells_systemd_ready_feeds_the_watchdog_and_says_stopping(
        procs, tmp_path, monkeypatch):
    # Given a broker started by "systemd", with a watchdog of 0.4 s
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    try:
        broker = procs.broker(free_port())  # mDNS on (loopback): READY waits for the advert
        # Then READY comes, and the watchdog is fed, from the running loop
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1", count=3)
        # When it is told to stop, Then it says STOPPING and exits 0
        broker.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert broker.wait(60) == 0, _log(broker)
    finally:
        notify.close()


def test_a_synthetic_worker_tells_systemd_ready_and_stopping(procs, tmp_path, monkeypatch, zctx):
    port = free_port()
    procs.broker(port)
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
    try:
        worker = synthetic(procs, port, "syn", "--slots", "2")
        monkeypatch.delenv("NOTIFY_SOCKET")
        notify.wait_for("READY=1")
        wait_until("the worker live", lambda: _live(zctx, port, "syn"))
        worker.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert worker.wait(60) == 0, _log(worker)
        assert "READY=1" in notify.lines()[:notify.lines().index("STOPPING=1")]
    finally:
        notify.close()


def test_a_broker_sigtermed_with_a_job_running_finishes_it_refuses_new_ones_and_exits_0(
        procs, zctx):
    # Given a broker with its HTTP API, and a slow synthetic worker (60 pieces, 0.1 s each)
    port, http = free_port(), free_port()
    broker = procs.broker(port, "--http", f"127.0.0.1:{http}", "--no-mdns")
    synthetic(procs, port, "slow", "--tokens", "60", "--token-delay-s", "0.1")
    wait_until("the worker live", lambda: _live(zctx, port, "slow"))
    running = Client(zctx, port)
    try:
        running.send(F.SERVICE_GENERATE, _job())
        _first_token(running)
        # When the broker is told to stop while the job runs
        broker.send_signal(signal.SIGTERM)
        wait_until("the broker draining", lambda: broker_status(zctx, port)["broker"]["stopping"])
        # Then a new job is refused, over MDP and over HTTP, while mmi still answers
        late = Client(zctx, port)
        late.send(F.SERVICE_GENERATE, _job(8))
        refused = late.final()
        late.close()
        assert refused["error"].startswith("the broker is shutting down"), refused
        req = urllib.request.Request(f"http://127.0.0.1:{http}/v1/completions",
                                     json.dumps({"prompt": "hi", "max_tokens": 4}).encode(),
                                     {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as http_err:
            urllib.request.urlopen(req, timeout=30)
        assert http_err.value.code == 503
        assert "shutting down" in http_err.value.read().decode()
        with pytest.raises(urllib.error.HTTPError) as health:  # a load balancer moves on
            urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=30)
        assert health.value.code == 503
        assert json.loads(health.value.read())["status"] == "shutting down"
        # And the running job still ends with its answer; the broker exits 0
        final = running.final()
        assert final["winner"]["text"].split() and len(final["winner"]["text"].split()) == 60
        assert broker.wait(60) == 0, _log(broker)
    finally:
        running.close()


def test_a_broker_whose_grace_runs_out_fails_the_job_with_a_final_that_says_why(procs, zctx):
    port = free_port()
    broker = procs.broker(port, "--no-mdns", "--shutdown-grace-s", "0.5")
    worker = synthetic(procs, port, "endless", "--tokens", "100000", "--token-delay-s", "0.05")
    wait_until("the worker live", lambda: _live(zctx, port, "endless"))
    client = Client(zctx, port)
    try:
        client.send(F.SERVICE_GENERATE, _job(4000))
        _first_token(client)
        broker.send_signal(signal.SIGTERM)
        final = client.final()
        assert final["error"].startswith("the broker is shutting down"), final
        assert "0.5 s grace" in final["error"]
        assert broker.wait(60) == 0, _log(broker)
        # the worker was told DISCONNECT (it goes on to look for a broker on its own)
        wait_until("the worker told DISCONNECT", lambda: "broker sent DISCONNECT" in _log(worker))
    finally:
        client.close()


def test_a_worker_whose_grace_runs_out_exits_0_and_its_candidate_is_redispatched(procs, zctx):
    # Given a slow worker holding the job's only candidate, and a fast one idle beside it
    port = free_port()
    procs.broker(port, "--no-mdns")
    slow = synthetic(procs, port, "slow", "--tokens", "100000", "--token-delay-s", "0.2",
                     "--shutdown-grace-s", "0.5")
    wait_until("the slow worker live", lambda: _live(zctx, port, "slow"))
    client = Client(zctx, port)
    try:
        client.send(F.SERVICE_GENERATE, _job())
        assert _first_token(client)["peer"] == "slow"
        synthetic(procs, port, "fast", "--tokens", "5")
        wait_until("the fast worker live", lambda: _live(zctx, port, "fast"))
        # When the slow one is told to stop and cannot finish within its grace
        slow.send_signal(signal.SIGTERM)
        # Then it exits 0, and the candidate is answered by the other worker
        assert slow.wait(60) == 0, _log(slow)
        final = client.final()
        winner = final["winner"]
        assert winner["peer"] == "fast" and final["candidates"][0]["attempts"] == 2, final
        assert "slow disconnected" in final["candidates"][0]["retried_after"]
        assert "shutdown grace is over" in _log(slow)
    finally:
        client.close()


def test_a_real_model_worker_sigtermed_mid_candidate_finishes_it_and_disconnects(
        procs, model_path, tmp_path, monkeypatch, zctx):
    # Given a broker whose liveness would take a minute to notice a silent worker,
    # and a real-model worker started by "systemd"
    port = free_port()
    broker = procs.broker(port, "--no-mdns", "--liveness", "300")
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
    try:
        worker = procs.worker(port, "real", "--model", str(model_path), "--instances", "1",
                              "--no-mdns", "--n-ctx", "512", "--shutdown-grace-s", "90")
        monkeypatch.delenv("NOTIFY_SOCKET")
        notify.wait_for("READY=1", timeout_s=90)
        wait_until("the worker live", lambda: _live(zctx, port, "real"))
        client = Client(zctx, port)
        client.send(F.SERVICE_GENERATE, {
            "messages": [{"role": "user", "content": "Count from 1 to 100, one number a line."}],
            "max_tokens": 160, "temperature": 0.0, "candidates": 1, "stream": "progress",
            "timeout_s": 100})
        seen = _first_token(client)["tokens"]
        # When the worker is told to stop mid-candidate
        worker.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        # Then its answer still arrives, whole
        final = client.final(timeout_s=100)
        client.close()
        assert final["winner"]["peer"] == "real" and final["candidates"][0]["ok"], final
        assert final["candidates"][0]["tokens"] > seen
        # And it says DISCONNECT, so the broker drops its slot at once, and exits 0
        assert worker.wait(60) == 0, _log(worker)
        wait_until("the slot dropped", lambda: not _live(zctx, port, "real"), timeout_s=30)
        assert "gone: disconnected" in _log(broker) and "went silent" not in _log(broker)
    finally:
        notify.close()
