"""Structured logs (issue 10, item 5) with real processes: `--log-format json` makes every
line one JSON object, lines about a job carry `job` (the id the client sees) and `peer`,
and the expected troubles (no broker, a peer killed mid-job, a bad flag, a busy port) say
one sentence, never a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.client import SwarmClient
from common.bodies import GenerateRequest, Sampling
from tests.conftest import BIN, FAST_HB, free_port, run, wait_for_peers
from tests.faults_util import synthetic, wait_for

pytestmark = pytest.mark.timeout(100)

JSON = ("--log-format", "json")


def records(path: Path) -> list[dict]:
    """Every line of a process's log as JSON; a line that is not JSON fails the test."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return out


def wait_for_line(path: Path, ok, what: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [r for r in records(path) if ok(r)]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"never logged {what}:\n{path.read_text()[-3000:]}")


def ask_job(port: int, **sampling) -> dict:
    request = GenerateRequest(Sampling(prompt="hi", **sampling), candidates=2, seed=1,
                              timeout_s=60.0, stream="progress")
    return run(SwarmClient(f"tcp://127.0.0.1:{port}").generate(request, 60.0), 70.0)


def test_json_logs_of_a_job_carry_its_id_and_peers(procs):
    # Given a broker and a two-slot synthetic worker, both logging JSON
    port = free_port()
    broker = procs.broker(port, *JSON)
    worker = synthetic(procs, port, "synth", "--slots", "2", "--tokens", "4", *JSON)
    wait_for(port, "synth live", lambda p: p.get("synth", {}).get("slots") == 2)
    # When a job of two candidates is asked
    result = ask_job(port, max_tokens=8)
    job = result["job"]
    wait_for_line(worker.log_path, lambda r: r.get("job") == job and r.get("cand") == 1
                  and "done" in r["msg"], "the worker's second candidate")
    procs.stop_all()
    # Then every line of both parsed as JSON (records() checks), with ts, level, logger, msg
    blines, wlines = records(broker.log_path), records(worker.log_path)
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in blines + wlines)
    # And the broker said the job's start and end with its id, the end with the winner's peer
    about = [r for r in blines if r.get("job") == job]
    assert [r["msg"].split(":")[0] for r in about] == ["job accepted", "job ended"]
    assert about[1]["peer"] == "synth" and about[1]["outcome"] == "ok"
    # And the worker said each candidate it served, with the job, its peer name and slot
    served = sorted((r["cand"], r["slot"]) for r in wlines if r.get("job") == job)
    assert {r["peer"] for r in wlines if r.get("job") == job} == {"synth"}
    assert [c for c, _ in served] == [0, 1] and {s for _, s in served} <= {0, 1}
    # And a line about a peer carries it as a field, not only in its text
    ready = [r for r in blines if r["msg"].startswith("worker ready")]
    assert sorted(r["slot"] for r in ready) == [0, 1] and {r["peer"] for r in ready} == {"synth"}


def test_a_peer_killed_mid_job_is_logged_without_a_traceback(procs):
    # Given a broker and a slow synthetic worker, both logging JSON, the broker at debug
    port = free_port()
    broker = procs.broker(port, *JSON, "-v", "--liveness", "3")
    victim = synthetic(procs, port, "victim", "--tokens", "1000", "--token-delay-s", "0.2", *JSON)
    wait_for(port, "victim live", lambda p: p.get("victim", {}).get("live") is True)
    asker = subprocess.Popen([str(BIN / "swarm-ask"), "--broker", f"tcp://127.0.0.1:{port}",
                              "-k", "1", "-n", "500", "--timeout-s", "60", "--retries", "0",
                              "hello"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        started = wait_for_line(broker.log_path, lambda r: "dispatched" in r["msg"],
                                "the candidate's dispatch")
        # When the worker is killed mid-job
        victim.kill()
        victim.wait(10)
        failed = wait_for_line(broker.log_path, lambda r: r["msg"].startswith("candidate failed"),
                               "the candidate's failure")
        _, err = asker.communicate(timeout=60)
    finally:
        if asker.poll() is None:
            asker.kill()
    procs.stop_all()
    # Then the broker logged the loss and the failure with job and peer, as JSON, no traceback
    text = broker.log_path.read_text()
    assert "Traceback" not in text and "Traceback" not in err.decode()
    assert failed["job"] == started["job"] and failed["peer"] == "victim"
    gone = [r for r in records(broker.log_path) if r["msg"].startswith("worker gone")]
    assert gone and gone[0]["peer"] == "victim" and gone[0]["job"] == started["job"]
    assert [r["exc"] for r in records(broker.log_path) if "exc" in r] == []


def test_a_worker_with_no_broker_says_so_without_a_traceback(procs):
    # Given a synthetic worker pointed at a port where no broker listens
    worker = synthetic(procs, free_port(), "lonely", *JSON)
    # When it has tried for a while, and is stopped
    wait_for_line(worker.log_path, lambda r: r["msg"].startswith("reconnecting"),
                  "a reconnect")
    worker.send_signal(signal.SIGINT)
    assert worker.wait(20) == 0
    # Then it said so in JSON lines with its peer, and no traceback
    lines = records(worker.log_path)
    assert "Traceback" not in worker.log_path.read_text()
    tried = [r for r in lines if r["msg"].startswith("no connection to")]
    assert tried and tried[0]["peer"] == "lonely" and tried[0]["slot"] == 0


@pytest.mark.parametrize("argv, words", [
    ([str(BIN / "swarm-broker"), "--log-format", "xml"], "Invalid value for '--log-format'"),
    ([str(BIN / "swarm-worker"), "--log-format", "yaml"], "Invalid value for '--log-format'"),
    ([sys.executable, "-m", "worker.synthetic", "--log-format", "csv"],
     "Invalid value for '--log-format'"),
    ([str(BIN / "swarm-broker"), "--bogus"], "No such option '--bogus'"),
], ids=["broker", "worker", "synthetic", "unknown"])
def test_a_bad_flag_is_one_sentence(argv, words):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr


def test_a_busy_port_is_one_sentence(procs):
    # Given a broker on a port
    port = free_port()
    procs.broker(port, *JSON)
    wait_for_peers(port, set())
    # When a second broker is started on the same port
    r = subprocess.run([str(BIN / "swarm-broker"), "--bind", f"tcp://127.0.0.1:{port}",
                        "--heartbeat-s", FAST_HB, "--http", "off", "--no-mdns", *JSON],
                       capture_output=True, text=True, timeout=60)
    # Then it says why in one sentence and exits non-zero, no traceback
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"cannot bind tcp://127.0.0.1:{port}" in r.stderr


def test_a_python_warning_in_a_json_log_is_a_json_line_too():
    code = ("import warnings; from common import logs; logs.setup(1, fmt='json'); "
            "warnings.warn('an old knob', DeprecationWarning, stacklevel=1)")
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                         text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    lines = out.stderr.splitlines()
    assert lines and all(json.loads(line) for line in lines), out.stderr
    record = json.loads(lines[0])
    assert record["level"] == "warning" and "an old knob" in record["msg"]


def test_a_text_field_with_control_characters_is_quoted_so_it_cannot_forge_a_line():
    import logging
    from common import logs
    record = logging.LogRecord("w", logging.INFO, __file__, 1, "joined", None, None)
    record.__dict__.update(logs.kv(peer="gpu\rERROR:forged\x1b[2J", slot=1))
    line = logs.TextFormatter().format(record)
    assert "\r" not in line and "\x1b" not in line
    assert line.endswith(' peer="gpu\\rERROR:forged\\u001b[2J" slot=1')
