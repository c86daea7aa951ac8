"""Config files with real sockets and real processes: a disabled peer refused on the wire, a
broker and a worker (the bundled model) started from their files, a bad file that starts
nothing."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from broker.peers import PeerSettings
from common.messages import Disconnect
from tests.conftest import BIN, FAST_HB, ask, free_port, run, wait_for_peers
from tests.faults_util import synthetic
from tests.wire import FakeWorker, registered, running_broker, status


def test_a_disabled_peer_is_refused_and_the_others_serve(ctx):
    async def body():
        peers = {"old": PeerSettings(disabled=True), "new": PeerSettings(weight=2.0)}
        async with running_broker(ctx, heartbeat_s=0.2, peers=peers) as broker:
            old = FakeWorker(ctx, broker.endpoint, "old")
            new = FakeWorker(ctx, broker.endpoint, "new")
            try:
                await old.ready()
                assert isinstance(await old.next(), Disconnect)
                await new.ready(heartbeat_s=0.2)
                await registered(broker)
                seen = await status(ctx, broker.endpoint)
                by_name = {p["name"]: p for p in seen["peers"]}
                assert seen["broker"]["rejected"]["disabled_peer"] == 1
                assert by_name["new"]["live"] and not by_name["new"]["disabled"]
                # the disabled peer is listed as such, never live, and not counted a failure
                old_seen = by_name["old"]
                assert old_seen["disabled"] and not old_seen["live"] and not old_seen["slots"]
                assert old_seen["metrics"]["requests"] == 0
            finally:
                old.close()
                new.close()
    run(body())


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def broker_file(tmp_path, port: int, extra: str = "") -> str:
    return str(write(tmp_path, "broker.toml", (
        f'bind = "tcp://127.0.0.1:{port}"\nhttp = "off"\nheartbeat_s = {FAST_HB}\n'
        f'no_mdns = true\n{extra}')))


@pytest.mark.timeout(90)
def test_a_broker_started_from_its_file_binds_there_and_applies_peer_timeouts(procs, tmp_path):
    # Given a broker whose only settings come from its file, and a worker named in [peers]
    port = free_port()
    path = broker_file(tmp_path, port, '[peers."syn"]\ntimeout_s = 42\nweight = 2\n'
                                       '[peers."other"]\ntimeout_s = 7\n')
    broker = procs.start("swarm-broker", "--config", path, "--peer-timeout", "other=9",
                         name="broker")
    synthetic(procs, port, "syn")
    # Then swarm-ask --peers shows the file's timeout as an override on that peer
    peers = {p["name"]: p for p in wait_for_peers(port, {"syn"})}
    assert peers["syn"]["timeout"]["s"] == 42 and peers["syn"]["timeout"]["source"] == "override"
    assert broker.poll() is None
    log = broker.log_path.read_text()
    assert f"configuration read from {path}" in log


@pytest.mark.timeout(60)
def test_a_flag_wins_over_the_brokers_file(procs, tmp_path):
    # Given a file that binds one port and a --bind flag naming another
    port, other = free_port(), free_port()
    path = broker_file(tmp_path, port)
    procs.start("swarm-broker", "--config", path, "--bind", f"tcp://127.0.0.1:{other}",
                name="broker")
    synthetic(procs, other, "syn")
    # Then the broker serves on the flag's port
    wait_for_peers(other, {"syn"})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text, why", [
    ('timeout_s = 0\n', "key 'timeout_s': 0 is not at least 0.01"),
    ('[peers."gpu"]\nweight = "heavy"\n', "key 'peers.gpu.weight': expected a number"),
    ('heartbeat = 1\n', "unknown key 'heartbeat' (did you mean 'heartbeat_s'?)"),
])
def test_a_bad_broker_file_exits_with_one_sentence_and_binds_nothing(tmp_path, text, why):
    port = free_port()
    path = broker_file(tmp_path, port, text)
    done = subprocess.run([str(BIN / "swarm-broker"), "--config", path], capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()  # one sentence, no traceback
    assert line.startswith(f"swarm-broker: {path}: {why}"), line
    with socket.socket() as s:  # the port is still free: nothing was bound
        s.bind(("127.0.0.1", port))


@pytest.mark.timeout(60)
def test_a_bad_worker_file_exits_with_one_sentence_before_loading(tmp_path):
    path = write(tmp_path, "worker.toml", 'instances = "many"\n')
    done = subprocess.run([str(BIN / "swarm-worker"), "--config", str(path)],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"swarm-worker: {path}: key 'instances': --instances must be "
                                   "auto or a whole number, not 'many'")


@pytest.mark.model
@pytest.mark.timeout(110)
def test_a_worker_started_from_its_file_serves_a_job_with_the_bundled_model(procs, tmp_path,
                                                                             model_path):
    # Given a broker, and a worker whose model, name, broker and instances come from its file
    port = free_port()
    procs.broker(port, "--no-mdns")
    path = write(tmp_path, "worker.toml", (
        f'broker = "tcp://127.0.0.1:{port}"\nname = "from-file"\nmodel = "{model_path}"\n'
        f'backend = "llama.cpp"\ninstances = 1\nthreads = 1\nn_ctx = 512\n'
        f'heartbeat_s = {FAST_HB}\nreconnect_s = 0.1\nno_mdns = true\n'))
    worker = procs.start("swarm-worker", "--config", str(path), name="worker")
    peers = {p["name"]: p for p in wait_for_peers(port, {"from-file"}, timeout_s=90)}
    assert peers["from-file"]["slots"] == 1
    # When a question is asked, Then that worker answers it
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--candidates", "1", "--max-tokens", "8",
            "--json", "Say hi.", timeout_s=90)
    assert r.returncode == 0, r.stderr
    final = json.loads(r.stdout)
    assert final["winner"]["peer"] == "from-file" and final["winner"]["text"].strip()
    assert f"configuration read from {path}" in worker.log_path.read_text()
