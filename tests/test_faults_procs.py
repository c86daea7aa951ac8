"""Faults with real processes (issue 9): workers killed, stopped and rude; the broker killed
and restarted. Each test asserts what the user sees: the FINAL, swarm-ask's output and exit
code, and the metrics of `swarm-ask --peers --json`. Jobs get long timeouts, so that only
the fault handling under test can end them in time; nothing waits on a clock but the
failure bounds.
"""

from __future__ import annotations

import signal

import pytest

from client.client import SwarmClient
from common.bodies import GenerateRequest, Sampling
from tests.conftest import ask, free_port, run, wait_for_peers
from tests.faults_util import peers, start_ask, synthetic, wait_for
from tests.test_cli_session import read_until

LIVENESS = "5"  # heartbeats (0.2 s each) a peer may miss: a loaded machine may delay a few


def _lose_mid_stream(procs, model_path, how: signal.Signals):
    """Two real-model workers; `victim` gets `how` at its first token of a 600 s job.
    Returns (port, the victim's process, the FINAL, the progress events)."""
    port = free_port()
    procs.broker(port, "--timeout-s", "600", "--liveness", LIVENESS)
    victim = procs.worker(port, "victim", "--model", str(model_path))
    procs.worker(port, "survivor", "--model", str(model_path))
    wait_for_peers(port, {"victim", "survivor"})
    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["event"] == "token" and event["peer"] == "victim" and \
                not any(e.get("signalled") for e in events):
            victim.send_signal(how)
            events.append({"event": "", "signalled": True})

    # 48 tokens: long enough to be hit mid-stream, short enough for a slow survivor to write
    # both answers; the job's own deadline is far off, so only liveness can end the victim's
    request = GenerateRequest(Sampling(prompt="Once upon a time", max_tokens=48, temperature=0.8),
                              candidates=2, seed=5, timeout_s=600.0, stream="progress")
    result = run(SwarmClient(f"tcp://127.0.0.1:{port}").generate(request, 600.0, on_event), 110.0)
    assert any(e.get("signalled") for e in events), "the victim never streamed a token"
    return port, victim, result, events


def _assert_replaced(port: int, result: dict, events: list[dict]) -> None:
    # the victim's candidate went to the survivor (seed variation) and finished there; the
    # FINAL says which attempt it was and what sent it on
    cands = result["candidates"]
    assert [c["peer"] for c in cands] == ["survivor", "survivor"]
    assert all(c["ok"] for c in cands)
    (moved,) = [c for c in cands if c["attempts"] == 2]
    assert moved["retried_after"].startswith("victim went silent")
    assert [e["text"] for e in events if e["event"] == "retry"] == [moved["retried_after"]]
    victim = peers(port)["victim"]["metrics"]
    assert victim["heartbeat_misses"] == 1 and victim["failures"] == 1
    assert victim["last_error"] == moved["retried_after"] and victim["last_error_at"]


@pytest.mark.model
@pytest.mark.timeout(180)
def test_a_worker_killed_mid_stream_is_replaced_and_its_metrics_say_so(procs, model_path):
    port, _, result, events = _lose_mid_stream(procs, model_path, signal.SIGKILL)
    _assert_replaced(port, result, events)
    assert not peers(port)["victim"]["live"]


@pytest.mark.model
@pytest.mark.timeout(180)
def test_a_stopped_worker_is_replaced_and_serves_again_once_continued(procs, model_path):
    # Given a worker that hangs mid-stream with its socket open (SIGSTOP)
    port, victim, result, events = _lose_mid_stream(procs, model_path, signal.SIGSTOP)
    try:
        # Then the job ended from the survivor, and the hung peer's metrics say so
        _assert_replaced(port, result, events)
        assert not peers(port)["victim"]["live"]
    finally:
        victim.send_signal(signal.SIGCONT)
    # When it runs again, it registers anew (the broker forgot it) and takes work
    wait_for(port, "the continued victim live and idle",
             lambda p: p.get("victim", {}).get("live") and p["victim"]["busy"] == 0)
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--json", "-k", "2", "-n", "8",
            "--timeout-s", "120", "Say hello.")
    assert r.returncode == 0, r.stderr
    assert peers(port)["victim"]["metrics"]["successes"] == 1  # candidates spread over peers


@pytest.mark.timeout(90)
def test_a_worker_that_ignores_cancel_is_disconnected_after_the_grace_and_serves_again(procs):
    # Given a rude worker: it hears CANCEL and goes on writing (100000 tokens, ~80 min),
    # and a broker that gives it 5 s per candidate and 1 s of grace after a CANCEL
    port = free_port()
    procs.broker(port, "--liveness", LIVENESS, "--cancel-grace-s", "1",
                 "--peer-timeout", "rude=5")
    synthetic(procs, port, "rude", "--ignore-cancel", "--tokens", "100000",
              "--token-delay-s", "0.05")
    wait_for_peers(port, {"rude"})
    # When its candidate times out (CANCEL sent, ignored)
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--json", "-k", "1", "-n", "32768",
            "--timeout-s", "600", "Go on forever.")
    assert r.returncode == 1 and "rude timed out waiting for the answer" in r.stderr
    # Then the broker takes the slot back (DISCONNECT), counts it, and the worker registers
    # again with its slot free, instead of holding it for the rest of its 80 minutes
    seen = wait_for(port, "rude disconnected for ignoring CANCEL, then live and idle again",
                    lambda p: p.get("rude", {}).get("live") and p["rude"]["busy"] == 0
                    and p["rude"]["metrics"]["cancel_ignored"] == 1)
    assert seen["rude"]["metrics"]["timeouts"] == 1
    # And it serves the next job
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--json", "-k", "1", "-n", "4",
            "--timeout-s", "600", "Four words, please.")
    assert r.returncode == 0, r.stderr
    assert "winner" in r.stdout and '"peer": "rude"' in r.stdout


def slow_swarm(procs):
    """A broker and one slow synthetic worker ("slow": 16 pieces, 0.3 s each), live."""
    port = free_port()
    broker = procs.broker(port, "--liveness", LIVENESS)
    synthetic(procs, port, "slow", "--tokens", "16", "--token-delay-s", "0.3")
    wait_for_peers(port, {"slow"})
    return port, f"tcp://127.0.0.1:{port}", broker


@pytest.mark.timeout(110)
def test_swarm_ask_retries_when_the_broker_is_killed_and_restarted(procs):
    # Given a slow worker (16 pieces, 0.3 s each) and swarm-ask waiting on its answer
    port, endpoint, broker = slow_swarm(procs)
    proc = start_ask("--broker", endpoint, "-k", "1", "-n", "16", "--timeout-s", "600",
                     "Hello?")
    try:
        read_until(proc.stderr, "dispatched")
        # When the broker is killed mid-job and a new one starts on the same port
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        procs.broker(port, "--liveness", LIVENESS)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # Then swarm-ask says it retried and answers (the worker came back on its own)
    assert proc.returncode == 0, err
    assert f"swarm-ask: lost the broker at {endpoint} mid-request" in err
    assert "retrying (1/3)" in err and "Traceback" not in err
    assert len(out.split()) == 16  # the synthetic answer: 16 words
    assert peers(port)["slow"]["live"]


@pytest.mark.timeout(60)
def test_swarm_ask_gives_up_after_its_retries_when_the_broker_stays_away(procs):
    port, endpoint, broker = slow_swarm(procs)
    proc = start_ask("--broker", endpoint, "-k", "1", "-n", "16", "--timeout-s", "600",
                     "--retries", "2", "--connect-timeout-s", "1", "Hello?")
    try:
        read_until(proc.stderr, "dispatched")
        broker.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=45)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert "retrying (1/2)" in lines[-3] and "retrying (2/2)" in lines[-2]
    assert "could not be reached within 1 s" in lines[-1]
    assert lines[-1].endswith("(gave up after 2 retries)") and "Traceback" not in err
