"""Discovery across hosts: hosts built from network namespaces on one bridge.

A switch namespace holds a bridge; each host namespace gets a veth to it, an address in
10.77.0.0/24 and its loopback; multicast is on. The broker runs in one host, two workers in
two others, all started without --broker, and swarm-ask asks from a fourth. Only the
namespaces made here carry traffic. Skipped only where namespaces cannot be made.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, FAST_HB, Procs
from tests.netns_util import ip as _ip, require_namespaces
from tests.test_discovery import poll_peers, swarm_name

pytestmark = pytest.mark.model

HOSTS = ("broker", "one", "two", "client")
SUBNET = "10.77.0"



class Lan:
    """Host namespaces on one bridge; `start` runs a program in one, `ask` runs swarm-ask."""

    def __init__(self, tmp: Path):
        tag = os.getpid()
        self.switch = f"swt{tag}sw"
        self.hosts = {h: f"swt{tag}{h[:2]}" for h in HOSTS}
        self.procs = Procs(tmp)
        self.tmp = tmp

    def build(self) -> None:
        for ns in (self.switch, *self.hosts.values()):
            _ip("netns", "del", ns, check=False)  # a leftover of an earlier run with our pid
            _ip("netns", "add", ns)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, ns in enumerate(self.hosts.values(), start=1):
            _ip("-n", self.switch, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", self.switch, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up", "multicast", "on")
            _ip("-n", ns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        self.procs.stop_all()
        for ns in (*self.hosts.values(), self.switch):
            _ip("netns", "del", ns, check=False)

    def env(self, host: str) -> dict[str, str]:
        """A host's own machine id, and mDNS on all of its interfaces."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWARM_STATE_DIR": str(self.tmp / host)}
        env.pop("SWARM_MDNS_INTERFACES", None)
        env.pop("SWARM_BROKER", None)
        return env

    def start(self, host: str, *args: str, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen(["ip", "netns", "exec", self.hosts[host], str(BIN / args[0]),
                                 *args[1:]], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env(host))
        self.procs.procs.append(proc)
        return proc

    def ask(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.hosts["client"], str(BIN / "swarm-ask"),
                               *args], capture_output=True, text=True, timeout=60,
                              env=self.env("client"))


@pytest.fixture
def lan(tmp_path):
    require_namespaces("swt")
    net = Lan(tmp_path)
    try:
        net.build()
        yield net
    finally:
        net.destroy()


def test_workers_on_two_hosts_find_the_broker_on_a_third(lan, model_path):
    swarm, other = swarm_name(), swarm_name()
    worker = ("swarm-worker", "--heartbeat-s", FAST_HB, "--reconnect-s", "0.1", "--n-ctx", "256",
              "--model", str(model_path))
    lan.start("broker", "swarm-broker", "--swarm", swarm, "--heartbeat-s", FAST_HB, "--http",
              "off", name="broker")
    lan.start("one", *worker, "--swarm", swarm, "--name", "w1", name="w1")
    lan.start("two", *worker, "--swarm", swarm, "--name", "w2", name="w2")
    lan.start("two", *worker, "--swarm", other, "--name", "stranger", name="stranger")

    # Then swarm-ask, on a fourth host and without --broker, lists both with their hardware
    def both(ps):
        return all(ps.get(w, {}).get("live") and ps[w].get("advertised") for w in ("w1", "w2"))
    peers = poll_peers(swarm, both, runner=lan.ask)
    for name in ("w1", "w2"):
        p = peers[name]
        assert p["connected"] and p["advertised"], p
        assert p["profile"]["swarm"] == swarm
        assert p["profile"]["hardware"]["ram_total_mb"] > 0
    assert peers["w1"]["profile"]["node_id"] != peers["w2"]["profile"]["node_id"]
    assert "stranger" not in peers  # another swarm on the same hosts is not mixed in

    # and a question asked there is answered by the workers on the other hosts
    r = lan.ask("--swarm", swarm, "--json", "-k", "2", "-n", "4", "Hello")
    assert r.returncode == 0, r.stderr
    assert {c["peer"] for c in json.loads(r.stdout)["candidates"]} <= {"w1", "w2"}
    log = (lan.tmp / "w1.log").read_text()
    assert f"tcp://{SUBNET}.1:7555" in log  # w1 reached the broker at its LAN address
