"""swarm-ask and swarm-worker over time: a broker that is not there or dies, Ctrl-C that
cancels, a chat on a terminal, a worker stopped while it loads its model. Real console
scripts as subprocesses; raw fakes on loopback where only the wire matters."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import time

import pytest

from common import frames as F
from tests.cli_fakes import FakeBroker, HoldingWorker, winner_final
from tests.conftest import BIN, FAST_HB, free_port, wait_for_peers


def start_ask(*args: str, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen([str(BIN / "swarm-ask"), *args], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)


def read_until(stream, needle: str) -> str:
    """Lines of a subprocess's stream up to the one that holds needle (pytest-timeout guards)."""
    seen = ""
    while needle not in seen:
        line = stream.readline()
        assert line, f"stream ended before {needle!r}: {seen!r}"
        seen += line
    return seen


# -- 14: a broker that is not there, or goes away ------------------------------------------

def test_unreachable_broker_gives_up_after_the_connect_timeout():
    port = free_port()
    proc = start_ask("--broker", f"tcp://127.0.0.1:{port}", "--connect-timeout-s", "1",
                     "--timeout-s", "600", "Hello?")
    _, err = proc.communicate(timeout=60)  # far below the 600 s job timeout
    assert proc.returncode == 1
    assert "could not be reached within 1 s (the connect timeout" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_broker_killed_mid_job_is_reported_at_once(procs):
    # Given a broker whose only worker takes the job and holds it (retries off: see
    # tests/test_faults_procs.py for the retries)
    port = free_port()
    broker = procs.broker(port, "--liveness", "25")  # a loaded machine may delay a beat
    worker = HoldingWorker(f"tcp://127.0.0.1:{port}", "holder", float(FAST_HB))
    try:
        wait_for_peers(port, {"holder"})
        proc = start_ask("--broker", f"tcp://127.0.0.1:{port}", "--timeout-s", "600",
                         "--retries", "0", "-k", "1", "Tell me a long story.")
        read_until(proc.stderr, "dispatched")
        # When the broker dies mid-job
        broker.send_signal(signal.SIGKILL)
        # Then swarm-ask says so, long before the 600 s job timeout (pytest-timeout: 120 s)
        _, err = proc.communicate(timeout=60)
    finally:
        worker.close()
    assert proc.returncode == 1
    assert f"lost the broker at tcp://127.0.0.1:{port} mid-request" in err
    assert "Traceback" not in err


# -- 16: Ctrl-C cancels; the chat keeps the conversation -----------------------------------

def test_ctrl_c_during_a_request_sends_swarm_cancel_on_the_same_socket():
    dispatched = {"event": "dispatched", "job": "j1", "cand": 0, "peer": "fake", "tokens": 0,
                  "text": ""}
    answers = {F.SERVICE_GENERATE: [(dispatched, False)],  # then nothing: the job runs on
               F.SERVICE_CANCEL: [({"cancelled": 1}, True)]}
    fake = FakeBroker(lambda seen: answers.get(seen.service, []))
    try:
        proc = start_ask("--broker", fake.endpoint, "--timeout-s", "600", "Hello?")
        read_until(proc.stderr, "dispatched")
        proc.send_signal(signal.SIGINT)
        cancel = fake.wait_for(F.SERVICE_CANCEL)[0]
        _, err = proc.communicate(timeout=30)
        generate = fake.wait_for(F.SERVICE_GENERATE)[0]
    finally:
        fake.close()
    assert cancel.client == generate.client and cancel.body == {}
    assert proc.returncode == 130
    assert "cancelled" in err and "Traceback" not in err


def _chat_broker():
    """Answers each chat turn with `answer N`, except a question `hang`, left unanswered."""
    def answer(seen):
        if seen.service == F.SERVICE_CANCEL:
            return [({"cancelled": 1}, True)]
        if seen.body["messages"][-1]["content"] == "hang":
            return []
        turn = sum(1 for m in seen.body["messages"] if m["role"] == "user")
        return [(winner_final(f"answer {turn}"), True)]
    return FakeBroker(answer)


def test_chat_on_a_terminal_keeps_the_conversation_and_ctrl_c_cancels_one_answer(tmp_path):
    fake = _chat_broker()
    master, slave = pty.openpty()
    err_path = tmp_path / "stderr"
    try:
        with open(err_path, "w") as err:
            proc = subprocess.Popen([str(BIN / "swarm-ask"), "--broker", fake.endpoint],
                                    stdin=slave, stdout=slave, stderr=err)
        os.close(slave)
        os.write(master, b"What is the capital of France?\n")
        fake.wait_for(F.SERVICE_GENERATE, 1)
        os.write(master, b"hang\n")
        fake.wait_for(F.SERVICE_GENERATE, 2)
        proc.send_signal(signal.SIGINT)  # Ctrl-C during an answer: that answer only
        fake.wait_for(F.SERVICE_CANCEL)
        os.write(master, b"And of Italy?\n")
        third = fake.wait_for(F.SERVICE_GENERATE, 3)[2]
        os.write(master, b"/bye\n")
        assert proc.wait(30) == 0
        screen = _drain(master)
    finally:
        os.close(master)
        fake.close()
    assert third.body["messages"] == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "And of Italy?"},
    ]
    assert "answer 1" in screen and "answer 2" in screen
    assert "answer cancelled" in err_path.read_text()


def _drain(master: int) -> str:
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


# -- 15: a worker stopped while it loads ---------------------------------------------------

@pytest.mark.model
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_worker_stops_at_once_when_signalled_during_model_load(procs, model_path, sig):
    # Given a worker loading many instances (seconds of C code) and no broker at all
    worker = procs.worker(free_port(), "loader", "--model", str(model_path),
                          "--instances", "16", "--n-ctx", "128")
    deadline = time.monotonic() + 60
    while "loading" not in worker.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # now inside llama.cpp's load
    # When it is signalled, Then it ends there and then, quietly and not with success
    worker.send_signal(sig)
    assert worker.wait(30) != 0
    log = worker.log_path.read_text()
    assert "Traceback" not in log and "serving" not in log
