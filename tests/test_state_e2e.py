"""State that survives a restart, with real processes: swarm-broker, a worker, swarm-ask.
A broker is stopped by a signal and started again on the same --state-dir; what
`swarm-ask --peers --json` and `swarm-ask --history --json` show must come back."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.conftest import Procs, ask, free_port, wait_for_peers
from tests.faults_util import synthetic

pytestmark = pytest.mark.timeout(110)


def _ask(port: int, *args: str) -> subprocess.CompletedProcess:
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--no-mdns", "--timeout-s", "30", *args,
            timeout_s=90)
    assert r.returncode == 0, r.stderr
    return r


def _peers(port: int) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads(_ask(port, "--peers", "--json").stdout)}


def _history(port: int) -> list[dict]:
    return json.loads(_ask(port, "--history", "50", "--json").stdout)


def _stop(proc: subprocess.Popen, sig: signal.Signals) -> None:
    proc.send_signal(sig)
    proc.wait(30)


def _restarted(procs: Procs, state: str, broker: subprocess.Popen, *workers) -> int:
    """Stop the broker by SIGTERM and its workers, start a new one on `state`: its port."""
    _stop(broker, signal.SIGTERM)
    for worker in workers:
        _stop(worker, signal.SIGINT)
    port = free_port()
    procs.broker(port, "--no-mdns", "--state-dir", state)
    return port


def test_peer_records_and_jobs_survive_a_restart(procs, tmp_path):
    # Given a broker on a state directory, a synthetic worker and three jobs answered
    state = str(tmp_path / "state")
    port = free_port()
    broker = procs.broker(port, "--no-mdns", "--state-dir", state)
    worker = synthetic(procs, port, "syn", "--slots", "2", "--tokens", "6",
                       "--token-delay-s", "0.01")
    wait_for_peers(port, {"syn"})
    for i in range(3):
        _ask(port, "--json", "-k", "2", "-n", "8", f"question {i}")
    before, jobs = _peers(port)["syn"], _history(port)
    assert before["metrics"]["successes"] == 6 and before["timeout"]["source"] == "learned"
    # When the broker is stopped by SIGTERM and started again, the worker gone
    port = _restarted(procs, state, broker, worker)
    # Then it shows the same peer record (learned timeout too) and the same jobs
    after = _peers(port)["syn"]
    assert not after["live"]
    assert after["metrics"] == before["metrics"] and after["timeout"] == before["timeout"]
    assert _history(port) == jobs and len(jobs) == 3
    assert jobs[0]["winner"]["peer"] == "syn" and jobs[0]["strategy"] == "auto"
    table = _ask(port, "--history").stdout.splitlines()
    assert table[0].split()[:3] == ["time", "job", "strategy"]
    assert jobs[0]["job"] in table[1] and "2/2" in table[1]


def test_a_corrupt_database_is_reported_once_and_the_broker_serves_from_memory(procs, tmp_path):
    # Given a state file of garbage
    state = tmp_path / "state"
    state.mkdir()
    (state / "broker.sqlite3").write_bytes(b"garbage, not SQLite\x00" * 100)
    port = free_port()
    broker = procs.broker(port, "--no-mdns", "--state-dir", str(state))
    synthetic(procs, port, "syn", "--tokens", "3")
    wait_for_peers(port, {"syn"})
    # When jobs are asked
    for i in range(2):
        _ask(port, "--json", "-k", "1", "-n", "4", f"question {i}")
    # Then the broker answers them and keeps them in memory, and said so once
    assert len(_history(port)) == 2
    _stop(broker, signal.SIGINT)
    log = broker.log_path.read_text()
    assert log.count("cannot keep the broker's state") == 1, log
    assert str(state / "broker.sqlite3") in log and "Traceback" not in log


def test_history_usage_errors():
    for args, says in ((["--history", "what is 2+2"], "takes no question"),
                       (["--history", "--local"], "takes no question, --local"),
                       (["--peers", "--history"], "takes no question, --local or --peers"),
                       (["--history", "0"], "Invalid value for '--history'")):
        r = ask(*args, timeout_s=60)
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


@pytest.mark.model
def test_the_real_model_job_survives_a_restart(procs, tmp_path, model_path):
    # Given a broker, a real worker on the bundled model and one job answered
    state = str(tmp_path / "state")
    port = free_port()
    broker = procs.broker(port, "--no-mdns", "--state-dir", state)
    worker = procs.worker(port, "real", "--model", str(model_path))
    wait_for_peers(port, {"real"}, timeout_s=90)
    answer = json.loads(_ask(port, "--json", "-k", "1", "-n", "8", "What is 2+2?").stdout)
    assert answer["winner"]["peer"] == "real"
    before = _peers(port)["real"]["metrics"]
    # When the broker restarts on the same state directory
    port = _restarted(procs, state, broker, worker)
    # Then the job and the peer's record are there
    jobs = _history(port)
    assert len(jobs) == 1 and jobs[0]["outcome"] == "ok"
    assert jobs[0]["winner"]["peer"] == "real" and jobs[0]["candidates"][0]["tokens"] > 0
    assert _peers(port)["real"]["metrics"] == before and before["successes"] == 1
