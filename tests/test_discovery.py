"""Discovery: which endpoint a worker picks, what swarm.status shows of advertised workers,
sessions that follow the broker discovery knows, and real zeroconf on loopback (in this
process, then the three programs as subprocesses with the real model)."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import os
import time
from itertools import count

import pytest
import zmq
from rich.console import Console

from broker.metrics import MetricsBook
from broker.registry import Registry
from broker.status import status_map
from client.peers_view import peer_lines, peers_table
from common.discovery import broker_mdns, find_broker, worker_mdns
from common.hardware import Gpu, Hardware
from common.mdns import BrokerAdvert, WorkerAdvert
from common.mdns_addr import advertised_addresses, choose_endpoint
from common.messages import Disconnect, Ready
from common.profile import WorkerProfile
from tests.conftest import FAST_HB, ask, free_port, run
from tests.test_worker_session import SlowBackend, next_msg
from worker.session import SessionConfig, WorkerSession

_swarms = count()


def swarm_name() -> str:
    """A swarm of this test alone: other test runs on this host never answer for it."""
    return f"t{os.getpid()}-{next(_swarms)}"


def ifaces(*specs: str) -> list[ipaddress.IPv4Interface]:
    return [ipaddress.IPv4Interface(s) for s in specs]


# -- which endpoint ------------------------------------------------------------------------
@pytest.mark.parametrize("advertised, local, expected", [
    # another host: its address on our network, never its loopback
    (("10.0.0.1", "127.0.0.1"), ("127.0.0.1/8", "10.0.0.2/24"), "tcp://10.0.0.1:7555"),
    (("192.168.9.9", "10.0.0.1"), ("127.0.0.1/8", "10.0.0.2/24"), "tcp://10.0.0.1:7555"),
    (("192.168.9.9",), ("127.0.0.1/8", "10.0.0.2/24"), "tcp://192.168.9.9:7555"),
    # this host: loopback when it is advertised, else our own address
    (("10.0.0.2", "127.0.0.1"), ("127.0.0.1/8", "10.0.0.2/24"), "tcp://127.0.0.1:7555"),
    (("10.0.0.2",), ("127.0.0.1/8", "10.0.0.2/24"), "tcp://10.0.0.2:7555"),
    # loopback only: it can only have come over our own loopback
    (("127.0.0.1",), ("127.0.0.1/8",), "tcp://127.0.0.1:7555"),
    # nothing usable
    (("fe80::1", "0.0.0.0", "224.0.0.251"), ("127.0.0.1/8",), None),
    ((), ("127.0.0.1/8",), None),
])
def test_the_endpoint_we_can_reach_is_chosen(advertised, local, expected):
    advert = BrokerAdvert("s", 7555, addresses=advertised)
    assert choose_endpoint(advert, ifaces(*local)) == expected


def test_a_wildcard_broker_advertises_every_address_one_bound_to_an_address_only_that():
    mine = ifaces("127.0.0.1/8", "10.0.0.2/24", "192.168.1.5/24")
    assert advertised_addresses("0.0.0.0", mine) == ["127.0.0.1", "10.0.0.2", "192.168.1.5"]
    assert advertised_addresses("*", mine) == ["127.0.0.1", "10.0.0.2", "192.168.1.5"]
    assert advertised_addresses("127.0.0.1", mine) == ["127.0.0.1"]
    assert advertised_addresses("::1", mine) == []  # the ROUTER listens on IPv4 only


# -- what swarm.status shows ---------------------------------------------------------------
def advert(name: str, node: str, swarm: str = "lab") -> WorkerAdvert:
    hw = Hardware(platform="linux", cores_logical=8,
                  gpus=(Gpu(0, "RTX 4090", 24000, 23000, "8.9"),))
    return WorkerAdvert(WorkerProfile(name=name, node_id=node, swarm=swarm, hardware=hw),
                        ("10.0.0.9",), seen_at=90.0)


def test_status_lists_advertised_workers_that_are_not_connected():
    registry, metrics = Registry(1.0, 3), MetricsBook()
    registry.add(b"s1", b"generate", WorkerProfile(name="here", node_id="n-here"), False, 0.0)
    metrics.peer("here")
    metrics.peer("gone")  # a worker that was connected once, and still advertises
    adverts = {"n-here": advert("here", "n-here"), "n-gone": advert("gone", "n-gone"),
               "n-new": advert("new", "n-new"), "n-twin": advert("here", "n-twin")}
    peers = {p["name"]: p for p in status_map(registry, metrics, {}, adverts, 100.0)["peers"]}
    assert set(peers) == {"here", "gone", "new", "here~n-twin"}
    assert (peers["here"]["live"], peers["here"]["connected"], peers["here"]["advertised"]) \
        == (True, True, True)
    for name in ("gone", "new", "here~n-twin"):
        p = peers[name]
        assert (p["live"], p["connected"], p["advertised"], p["slots"]) == (False, False, True, 0)
        assert p["profile"]["hardware"]["gpus"][0]["name"] == "RTX 4090"
        assert p["addresses"] == ["10.0.0.9"] and p["seen_s_ago"] == 10.0
    assert "new" not in metrics.names()  # showing an advert makes no metrics entry
    json.dumps(peers)  # what goes on the wire is plain data


def test_peers_output_marks_advertised_only_workers():
    peers = status_map(Registry(1.0, 3), MetricsBook(), {}, {"n1": advert("far", "n1")})["peers"]
    assert peer_lines(peers)[0].startswith("far: advertised")
    out = io.StringIO()
    peers_table(peers, Console(file=out, width=80, force_terminal=True, color_system=None))
    assert "advertised" in out.getvalue().splitlines()[1]


# -- a session follows the broker discovery knows -------------------------------------------
def test_each_connection_goes_to_the_broker_discovery_knows_then(ctx):
    async def body():
        routers = [ctx.socket(zmq.ROUTER) for _ in range(2)]
        ports = [r.bind_to_random_port("tcp://127.0.0.1") for r in routers]
        known: list[str] = []
        found = asyncio.Event()

        async def find_broker() -> str:
            await found.wait()  # nothing known yet: the session waits, it connects nowhere
            return known[-1]

        config = SessionConfig(None, find_broker=find_broker, heartbeat_s=0.05,
                               reconnect_min_s=0.01, reconnect_max_s=0.05)
        worker = WorkerSession(ctx, config, WorkerProfile(name="w"), SlowBackend())
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.3)
            assert worker.connections == 0
            known.append(f"tcp://127.0.0.1:{ports[0]}")
            found.set()
            identity, msg = await next_msg(routers[0], timeout_s=10.0)
            assert isinstance(msg, Ready)
            # When the broker moves, the next connection goes where discovery says now
            known.append(f"tcp://127.0.0.1:{ports[1]}")
            await routers[0].send_multipart([identity, *Disconnect().to_frames()])
            _, msg = await next_msg(routers[1], timeout_s=10.0)
            assert isinstance(msg, Ready) and worker.endpoint == known[-1]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for r in routers:
                r.close(linger=0)
    run(body())


# -- real zeroconf on loopback, in this process ------------------------------------------------
async def until(predicate, timeout_s: float = 30.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} never came true"
        await asyncio.sleep(0.05)


def test_loopback_broker_found_workers_browsed_and_swarms_kept_apart():
    swarm, other = swarm_name(), swarm_name()
    profile = WorkerProfile(name="w", node_id="abc123", swarm=swarm,
                            hardware=Hardware(platform="linux", cores_logical=4))

    async def body():
        async with broker_mdns(swarm, "tcp://127.0.0.1:7123") as workers:
            if workers is None:
                pytest.skip("zeroconf cannot start on loopback here")
            assert await find_broker(swarm, 20.0) == "tcp://127.0.0.1:7123"
            assert await find_broker(other, 1.5) is None
            async with worker_mdns(profile, find=True) as finder:
                assert await asyncio.wait_for(finder.wait(), 20.0) == "tcp://127.0.0.1:7123"
                await until(lambda: "abc123" in workers.adverts(), what="the worker's advert")
                assert workers.adverts()["abc123"].profile == profile
                async with worker_mdns(WorkerProfile(name="x", node_id="def456", swarm=other),
                                       find=False) as nothing:
                    assert nothing is None
                    await asyncio.sleep(1.0)
                    assert set(workers.adverts()) == {"abc123"}  # the other swarm's is not ours
            # a worker that leaves says goodbye: its advert goes at once, not after the TTL
            await until(lambda: not workers.adverts(), what="the goodbye")
    run(body(), timeout_s=90.0)


# -- the programs, on loopback, with the real model --------------------------------------------
@pytest.mark.model
def test_programs_find_each_other_without_broker_addresses(procs, model_path):
    swarm, other = swarm_name(), swarm_name()
    port = free_port()
    worker_args = ("--heartbeat-s", FAST_HB, "--reconnect-s", "0.1", "--n-ctx", "256",
                   "--model", str(model_path))
    procs.broker(port, "--swarm", swarm)
    procs.start("swarm-worker", "--swarm", swarm, "--name", "found", *worker_args, name="found")
    procs.start("swarm-worker", "--swarm", other, "--name", "stranger", *worker_args,
                name="stranger")
    procs.start("swarm-worker", "--swarm", swarm, "--name", "elsewhere", "--broker",
                f"tcp://127.0.0.1:{free_port()}", *worker_args, name="elsewhere")
    peers = poll_peers(swarm, lambda ps: ps.get("found", {}).get("live")
                       and ps["found"].get("advertised") and "elsewhere" in ps)
    found, elsewhere = peers["found"], peers["elsewhere"]
    assert found["advertised"] and found["connected"]
    assert found["profile"]["swarm"] == swarm and found["profile"]["hardware"]["ram_total_mb"] > 0
    assert (elsewhere["live"], elsewhere["connected"], elsewhere["advertised"]) == \
        (False, False, True)
    assert elsewhere["profile"]["hardware"]["cores_logical"] > 0
    assert "stranger" not in peers
    # and a question asked without --broker is answered by the worker found on mDNS
    r = ask("--swarm", swarm, "--json", "-k", "1", "-n", "4", "Hello")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["winner"]["peer"] == "found"


def poll_peers(swarm: str, done, timeout_s: float = 60.0, runner=None) -> dict[str, dict]:
    """`swarm-ask --peers --json` without --broker until `done(peers by name)`."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        args = ("--swarm", swarm, "--peers", "--json", "--timeout-s", "3",
                "--connect-timeout-s", "2")
        r = runner(*args) if runner else ask(*args)
        last = r.stderr or r.stdout
        if r.returncode == 0:
            peers = {p["name"]: p for p in json.loads(r.stdout)}
            if done(peers):
                return peers
        time.sleep(0.3)
    raise AssertionError(f"the peers never showed up; last answer: {last[-2000:]}")


# -- without mDNS ----------------------------------------------------------------------------
def test_no_usable_interface_means_one_warning_and_no_mdns(monkeypatch, caplog):
    monkeypatch.setenv("SWARM_MDNS_INTERFACES", "198.51.100.77")  # not an address of ours

    async def body():
        assert await find_broker("lab", 1.0) is None
        async with broker_mdns("lab", "tcp://127.0.0.1:7123") as workers:
            assert workers is None
        async with worker_mdns(WorkerProfile(name="w"), find=True) as finder:
            assert finder is None
    run(body())
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3 and all("mDNS is unavailable" in r.getMessage() for r in warnings)


def test_a_worker_with_no_broker_and_no_mdns_says_what_it_tries(ctx, monkeypatch, caplog):
    from worker.node import WorkerNode
    monkeypatch.setenv("SWARM_MDNS_INTERFACES", "198.51.100.77")

    async def body():
        node = WorkerNode(SessionConfig(None, heartbeat_s=0.05), WorkerProfile(name="w"),
                          [SlowBackend()], ctx, mdns=True)
        task = asyncio.create_task(node.run())
        try:
            await until(lambda: node.sessions and node.sessions[0].connections, 10.0)
            assert node.sessions[0].endpoint == "tcp://127.0.0.1:7555"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    run(body())
    assert "no mDNS to find the broker with; trying tcp://127.0.0.1:7555" in caplog.text


# -- the browsers' tables, fed records without a network -------------------------------------
class FakeInfo:
    def __init__(self, txt: dict, port: int = 9, addresses=("10.0.0.5",)):
        self.properties = {k.encode(): v.encode() for k, v in txt.items()}
        self.port, self._addresses = port, list(addresses)

    def parsed_addresses(self):
        return self._addresses


def test_browsers_keep_their_swarm_follow_the_latest_broker_and_cap_their_tables():
    from common import browsers, mdns
    workers = browsers.WorkerBrowser(None, "lab")
    for i in range(browsers.MAX_RECORDS + 5):
        profile = WorkerProfile(name=f"w{i}", node_id=f"n{i}", swarm="lab")
        workers._resolved(f"w{i}", FakeInfo(mdns.worker_txt(profile)))
    workers._resolved("x", FakeInfo(mdns.worker_txt(WorkerProfile(name="x", node_id="nx",
                                                                  swarm="other"))))
    workers._resolved("junk", FakeInfo({"id": "no name"}))
    assert len(workers.adverts()) == browsers.MAX_RECORDS and "nx" not in workers.adverts()
    workers._removed("w0")
    assert "n0" not in workers.adverts()

    finder = browsers.BrokerFinder(None, "lab")
    finder._resolved("a", FakeInfo(mdns.broker_txt("lab", 7001), 7001, ("127.0.0.1",)))
    finder._resolved("b", FakeInfo(mdns.broker_txt("lab", 7002), 7002, ("127.0.0.1",)))
    finder._resolved("c", FakeInfo(mdns.broker_txt("other", 7003), 7003, ("127.0.0.1",)))
    assert finder.current() == "tcp://127.0.0.1:7002"  # the latest heard of our swarm
    finder._removed("b")
    assert finder.current() == "tcp://127.0.0.1:7001"
    finder._removed("a")
    assert finder.current() is None


def test_a_name_taken_on_the_network_is_renamed_not_fatal():
    """A broker restarted while its old record still answers (another process here)."""
    from common.discovery import Mdns, broker_advertiser
    swarm = swarm_name()

    async def body():
        first, second = Mdns(), Mdns()
        if not (await first.start() and await second.start()):
            pytest.skip("zeroconf cannot start on loopback here")
        old = broker_advertiser(first, swarm, "tcp://127.0.0.1:7555", ["127.0.0.1"])
        new = broker_advertiser(second, swarm, "tcp://127.0.0.1:7555", ["127.0.0.1"])
        try:
            assert await old.start()
            assert await new.start()
            assert new.info.name != old.info.name and swarm in new.info.name
        finally:
            for a in (old, new):
                await a.close()
            await first.close()
            await second.close()
    run(body(), timeout_s=60.0)
