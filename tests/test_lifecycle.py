"""Running as a service: the sd_notify client, draining jobs (pure), and the unit files."""

from __future__ import annotations

import logging
import os
import socket
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broker.lifecycle import SHUTDOWN_GRACE_S as BROKER_GRACE_S
from common.sdnotify import Notifier, watchdog_interval_s
from tests.lifecycle_util import NotifySocket
from tests.test_generate_logic import Swarm, finals, tasks
from worker.node import SHUTDOWN_GRACE_S as WORKER_GRACE_S

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
UNITS = ("swarm-broker.service", "swarm-worker@.service")
BIN = Path(sys.executable).parent


# -- sd_notify ----------------------------------------------------------------------------
def test_a_notifier_sends_ready_status_and_stopping_to_a_path_socket(tmp_path):
    given = NotifySocket(tmp_path / "notify")
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": given.address})
        n.ready("serving on tcp://127.0.0.1:1")
        n.stopping()
        assert given.wait_for("STOPPING=1", 5) == ["READY=1", "STATUS=serving on tcp://127.0.0.1:1",
                                                   "STOPPING=1"]
    finally:
        given.close()


def test_a_notifier_reaches_an_abstract_socket():
    name = f"@swarm-test-{os.getpid()}"
    given = NotifySocket(name)
    try:
        Notifier(name).ready()
        assert given.wait_for("READY=1", 5) == ["READY=1"]
    finally:
        given.close()


def test_without_notify_socket_it_does_nothing_and_a_failed_send_is_logged_once(tmp_path, caplog):
    assert not Notifier.from_env({}).send("READY=1")
    gone = Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="common.sdnotify"):
        assert not gone.send("READY=1")  # never raises
        assert not gone.send("STOPPING=1")
    assert len(caplog.records) == 1 and "READY=1" in caplog.records[0].getMessage()


def test_the_watchdog_is_fed_every_half_interval_and_only_for_this_process(tmp_path):
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000"}, 7) == 2.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, 7) == 2.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}, 7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "1" + "0" * 400}, 7) is None  # past a float
    given = NotifySocket(tmp_path / "notify")
    try:
        n = Notifier(given.address, watchdog_s=2.0)
        for now in (10.0, 10.5, 10.99, 11.0, 11.5, 12.0):
            n.watchdog(now)
        given.wait_for("WATCHDOG=1", 5, count=3)
        assert n.count == 3  # at 10.0, 11.0 and 12.0: every half interval, no more
    finally:
        given.close()


# -- draining jobs (broker/generate.py, pure) --------------------------------------------
def test_draining_refuses_new_jobs_lets_running_ones_finish_then_fails_the_rest():
    s = Swarm()
    s.add(b"a")
    s.add(b"b")
    s.submit(candidates=1, seed=1)
    s.submit(candidates=1, seed=2)
    assert len(tasks(s.sent())) == 2
    s.service.drain()
    s.submit(candidates=1)
    refused = finals(s.sent())
    assert len(refused) == 1 and refused[0]["error"].startswith("the broker is shutting down")
    s.reply(b"a", 1.0, "4")  # a running job still finishes with its answer
    done = finals(s.sent())
    assert len(done) == 1 and done[0]["winner"]["text"] == "4"
    assert not s.service.drained
    assert s.service.fail_all(2.0, "it did not finish within the 5 s grace") == 1
    failed = finals(s.sent())
    assert len(failed) == 1 and "shutting down" in failed[0]["error"]
    assert "5 s grace" in failed[0]["error"] and s.service.drained


def test_a_refusal_while_shutting_down_is_an_http_503():
    from broker.openai_reply import job_error
    err = job_error({"error": "the broker is shutting down: try another broker"})
    assert err.status == 503 and err.to_map()["error"]["code"] == "shutting_down"


# -- the unit files ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:  # the test set-up installs what it needs, it does not skip
        subprocess.run(["apt-get", "install", "-y", "systemd"], check=True, capture_output=True,
                       timeout=600)
        found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is needed (apt-get install systemd)"
    return found


def _installed_copy(unit: str, tmp: Path) -> Path:
    """The unit with ExecStart pointing at this venv's scripts (verify checks they exist)."""
    text = (ROOT / "systemd" / unit).read_text()
    copy = tmp / unit.replace("@.", "@gemma.")  # a template is verified as an instance
    copy.write_text(text.replace("/opt/swarm/.venv/bin/", f"{BIN}/"))
    return copy


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_accepts_the_unit(unit, tmp_path, systemd_analyze):
    copy = _installed_copy(unit, tmp_path)
    r = subprocess.run([systemd_analyze, "verify", "--man=no", str(copy)], capture_output=True,
                       text=True, timeout=60)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if copy.name in line]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_is_a_sandboxed_notify_service_with_a_watchdog(unit):
    keys = {}
    for line in (ROOT / "systemd" / unit).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    one = {k: v[-1] for k, v in keys.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["Restart"] == "always" and one["DynamicUser"] == "yes"
    assert one["ProtectSystem"] == "strict" and one["NoNewPrivileges"] == "yes"
    assert "AF_NETLINK" in one["RestrictAddressFamilies"] and one["StateDirectory"]
    assert "WatchdogSec" in one
    # the grace is the daemons' default (a flag in ExecStart would hide the config file's)
    assert "--shutdown-grace-s" not in one["ExecStart"]
    grace = WORKER_GRACE_S if unit.startswith("swarm-worker") else BROKER_GRACE_S
    assert float(one["TimeoutStopSec"].rstrip("s")) > grace
    if unit.startswith("swarm-worker"):
        assert one.get("PrivateDevices", "no") == "no"
        assert any("nvidia" in d for d in keys["DeviceAllow"]) and \
            any("drm" in d or "dri" in d for d in keys["DeviceAllow"])
        assert "--config /etc/swarm/worker-%i.toml" in one["ExecStart"]
        env = " ".join(keys["Environment"])
        assert one["CacheDirectory"] and "SWARM_CACHE_DIR" in env
        # every GPU node of the device groups /proc/devices names (nvidia, nvidiactl,
        # nvidia-uvm, nvidia-caps: seen on an H100 host), and the instance's default name
        assert "char-nvidia* rw" in keys["DeviceAllow"] and "char-drm rw" in keys["DeviceAllow"]
        assert "SWARM_DEFAULT_NAME=%H-%i" in env and "--name" not in one["ExecStart"]


def test_a_worker_given_no_name_takes_the_one_its_unit_sets(monkeypatch):
    from common.profile import default_name
    monkeypatch.setenv("SWARM_DEFAULT_NAME", "gpu1-gemma")
    assert default_name() == "gpu1-gemma"
    monkeypatch.setenv("SWARM_DEFAULT_NAME", "  ")
    assert default_name() == (socket.gethostname() or "worker")
