"""swarm-ask's views (issue 10, item 4): `--peers` shows each peer's machine, model and
timeout in force; `--peers --watch` refreshes until Ctrl-C and lives through a broker that
goes away and comes back; the live per-candidate view shows tokens/s."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
import threading
import time

import pytest
from rich.console import Console

from broker.metrics import MetricsBook
from broker.policy import TimeoutPolicy
from broker.registry import Registry
from broker.status import status_map
from client.peers_view import peer_lines, peers_table
from client.peers_watch import Watch, watch
from client.render import Progress
from common.errors import RequestFailed
from common.hardware import Gpu, Hardware
from common.profile import WorkerProfile
from tests.conftest import BIN, ask, free_port
from tests.faults_util import synthetic, wait_for
from tests.test_cli_input import assert_usage_error, cli

pytestmark = pytest.mark.timeout(100)

BOX = Hardware(platform="linux", arch="x86_64", cores_logical=24, ram_total_mb=65536,
               gpus=(Gpu(0, "NVIDIA RTX 4090", vram_total_mb=24564),))


def status_peers() -> list[dict]:
    """What swarm.status says of a GPU box that hints 9 s and a laptop nothing is known of."""
    registry = Registry(1.0, 3)
    registry.add(b"1", b"generate", WorkerProfile(name="gpu-box", node_id="n1", model="gemma-3",
                                                  backend="llama.cpp", timeout_s=9.0,
                                                  hardware=BOX, gpu_layers=-1), False, 0.0)
    registry.add(b"2", b"generate", WorkerProfile(name="laptop", node_id="n2", model="qwen",
                                                  backend="mlx"), False, 0.0)
    status = status_map(registry, MetricsBook(), {}, None, 1.0, TimeoutPolicy(60.0))
    return json.loads(json.dumps(status["peers"]))


def test_peers_view_shows_machine_model_and_timeout_from_a_status_map():
    # Given the status a broker gives
    peers = status_peers()
    # When it is drawn on an 80-column terminal
    out = io.StringIO()
    peers_table(peers, Console(file=out, width=80, force_terminal=True, color_system=None))
    text = out.getvalue()
    # Then each peer shows its model, timeout with its source, and machine, within 80 columns
    assert all(len(line) <= 80 for line in text.splitlines()), text
    rows = {line.split()[0]: line for line in text.splitlines() if line.split()}
    assert "9.0 s hint" in rows["gpu-box"] and "llama.cpp gemma-3" in rows["gpu-box"]
    assert "60.0 s default" in rows["laptop"] and "mlx qwen" in rows["laptop"]
    flat = " ".join(text.split())
    assert "24 cores" in flat and "64.0 GB RAM" in flat and "NVIDIA RTX 4090 24 GB" in flat
    # And in a pipe the same, in lines
    lines = peer_lines(peers)
    assert "gpu-box: live, 0/1 slots busy, llama.cpp gemma-3" in lines
    assert "  timeout 9.0 s hint (for 256 tokens)" in lines
    assert any("NVIDIA RTX 4090 24 GB" in line for line in lines)


def test_a_peer_the_config_disables_is_shown_disabled():
    status = status_map(Registry(1.0, 3), MetricsBook(), {}, None, 1.0, TimeoutPolicy(60.0),
                        disabled=frozenset({"old-laptop"}))
    peers = json.loads(json.dumps(status["peers"]))
    assert [(p["name"], p["disabled"], p["live"]) for p in peers] == [("old-laptop", True, False)]
    assert "old-laptop: disabled" in peer_lines(peers)
    out = io.StringIO()
    peers_table(peers, Console(file=out, width=100, force_terminal=True, color_system=None))
    assert "disabled" in out.getvalue()


def test_the_live_view_shows_tokens_per_second_per_candidate():
    # Given two candidates started at t=100, one twice as fast, and a clock the test moves
    now = [100.0]
    out = io.StringIO()
    progress = Progress(out, live=False, clock=lambda: now[0])
    for cand, peer in ((0, "fast"), (1, "slow")):
        progress.on_event({"event": "dispatched", "cand": cand, "peer": peer, "tokens": 0})
    # When each has streamed for 2 s
    now[0] = 102.0
    progress.on_event({"event": "token", "cand": 0, "tokens": 20, "text": " a"})
    progress.on_event({"event": "token", "cand": 1, "tokens": 10, "text": " b"})
    table = io.StringIO()
    Console(file=table, width=100, color_system=None).print(progress._table())
    # Then the view has a tok/s column with each one's rate
    lines = table.getvalue().splitlines()
    assert "tok/s" in lines[0]
    assert lines[1].split()[:5] == ["0", "fast", "streaming", "20", "10.0"]
    assert lines[2].split()[:5] == ["1", "slow", "streaming", "10", "5.0"]
    # And a retried candidate counts from its new start; an ended one says its rate once
    now[0] = 104.0
    progress.on_event({"event": "retry", "cand": 1, "peer": "other", "tokens": 0})
    progress.on_event({"event": "done", "cand": 0, "tokens": 30})
    assert "candidate 0 on fast: done, 30 tokens at 7.5 tok/s" in out.getvalue()
    now[0] = 105.0
    progress.on_event({"event": "token", "cand": 1, "tokens": 3, "text": " c"})
    assert progress.rows[1]["state"] == "streaming"
    table = io.StringIO()
    Console(file=table, width=100, color_system=None).print(progress._table())
    assert table.getvalue().splitlines()[2].split()[:5] == ["1", "other", "streaming", "3", "3.0"]


def test_watch_in_a_pipe_says_when_the_broker_is_away_and_back_then_ends_on_ctrl_c():
    # Given a broker that answers, then fails twice, then answers again
    answers = [status_peers(), RequestFailed("no broker at tcp://x:1"), RequestFailed("still"),
               status_peers()]

    def fetch() -> list[dict]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sleep(_s: float) -> None:
        if not answers:
            raise KeyboardInterrupt  # Ctrl-C while waiting for the next interval
    clock = iter(range(1_000_000, 1_000_100)).__next__
    # When it is watched in a pipe, and with --json
    out, js = io.StringIO(), io.StringIO()
    watch(fetch, Watch("tcp://x:1", 2.0), out, sleep=sleep, clock=clock)
    answers[:] = [RequestFailed("gone"), status_peers()]
    watch(fetch, Watch("tcp://x:1", 2.0), js, as_json=True, sleep=sleep, clock=clock)
    # Then each interval printed a block, the outage said once per interval with its reason,
    # and the watch ended quietly on Ctrl-C
    blocks = out.getvalue().split("--- ")[1:]
    assert len(blocks) == 4
    assert blocks[0].startswith("tcp://x:1: 2 peers at ") and "gpu-box: live" in blocks[0]
    assert "not answering since" in blocks[1] and "(no broker at tcp://x:1)" in blocks[1]
    assert "(still)" in blocks[2] and "gpu-box" not in blocks[2]
    assert "back since" in blocks[3] and "laptop: live" in blocks[3]
    records = [json.loads(line) for line in js.getvalue().splitlines()]
    assert records[0]["error"] == "gone" and "peers" not in records[0]
    assert [p["name"] for p in records[1]["peers"]] == ["gpu-box", "laptop"]


def test_watch_without_peers_is_a_usage_error():
    assert_usage_error(cli("swarm-ask", "--watch"), "--watch goes with --peers")
    assert_usage_error(cli("swarm-ask", "--peers", "--interval-s", "5"),
                       "--interval-s goes with --watch")
    assert_usage_error(cli("swarm-ask", "--peers", "--watch", "--interval-s", "0"),
                       "Invalid value for '--interval-s'")


class Reader:
    """Collects what a process writes to `fd` on a thread, so a test can wait on it."""

    def __init__(self, fd: int):
        self.data, self.fd = b"", fd
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pty's reader gets EIO when the other side closes
                return
            if not chunk:
                return
            self.data += chunk

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def wait(self, what: str, ok, timeout_s: float = 60.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ok(self.text()[start:]):
                return self.text()
            time.sleep(0.1)
        raise AssertionError(f"never saw {what}; the output was:\n{self.text()[-3000:]}")


def _watcher(port: int, stdout) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "swarm-ask"), "--broker", f"tcp://127.0.0.1:{port}",
                             "--peers", "--watch", "--interval-s", "0.3",
                             "--connect-timeout-s", "1"],
                            stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "80", "LINES": "40", "TERM": "xterm"})


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, proc.stderr.read().decode()


def test_peers_on_a_real_broker_show_machine_model_and_timeout(procs):
    # Given a broker with a synthetic worker
    port = free_port()
    procs.broker(port)
    synthetic(procs, port, "synth")
    wait_for(port, "synth live", lambda p: p.get("synth", {}).get("live") is True)
    # When swarm-ask --peers asks it (in a pipe)
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--peers", timeout_s=60)
    # Then the worker shows its model, timeout in force and machine
    assert r.returncode == 0, r.stderr
    assert "synth: live, 0/1 slots busy, synthetic synthetic" in r.stdout
    assert f"  timeout {60:.1f} s default (for 256 tokens)" in r.stdout
    assert f"{os.cpu_count()} cores" in r.stdout and "GB RAM" in r.stdout


def test_watch_in_a_pty_refreshes_and_exits_cleanly_on_sigint(procs):
    # Given a broker with a synthetic worker, watched on a terminal
    port = free_port()
    procs.broker(port)
    synthetic(procs, port, "synth")
    wait_for(port, "synth live", lambda p: p.get("synth", {}).get("live") is True)
    master, slave = pty.openpty()
    try:
        proc = _watcher(port, slave)
        os.close(slave)
        out = Reader(master)
        # When it has drawn the view at least twice
        out.wait("two refreshes", lambda t: t.count("Ctrl-C stops") >= 2 and "synthetic" in t)
        rc, err = _stop(proc)
    finally:
        os.close(master)
    # Then the view had the peer's model and timeout, and Ctrl-C ended it with 0, quietly
    assert rc == 0, err
    assert "Traceback" not in err and "60.0 s default" in out.text()


def test_watch_lives_through_the_broker_going_away_and_coming_back(procs):
    # Given a broker with a synthetic worker, watched in a pipe
    port = free_port()
    broker = procs.broker(port)
    synthetic(procs, port, "synth")
    wait_for(port, "synth live", lambda p: p.get("synth", {}).get("live") is True)
    proc = _watcher(port, subprocess.PIPE)
    out = Reader(proc.stdout.fileno())
    out.wait("the worker", lambda t: "synth: live" in t)
    # When the broker stops, and then a new one starts on the same port
    broker.send_signal(signal.SIGINT)
    broker.wait(20)
    away = len(out.wait("the outage", lambda t: "not answering since" in t))
    procs.broker(port)
    out.wait("the broker back with the worker",
             lambda t: "back since" in t and "synth: live" in t, start=away)
    rc, err = _stop(proc)
    # Then the watch said so and went on, and Ctrl-C ended it with 0, quietly
    assert rc == 0, err
    assert "Traceback" not in err
