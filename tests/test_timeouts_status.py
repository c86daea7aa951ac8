"""The timeout in force per peer, as `swarm.status` says it and `swarm-ask --peers` shows it
(issue 9, item 2): pure status and rendering, the broker's flags, and a real swarm."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from broker.adaptive import Learning
from broker.metrics import MetricsBook
from broker.policy import TimeoutPolicy
from broker.registry import Registry
from broker.status import status_map
from client.peers_view import peer_lines, peers_table
from common.mdns import WorkerAdvert
from common.profile import WorkerProfile
from tests.conftest import ask, free_port, wait_for_peers
from tests.faults_util import synthetic
from tests.test_cli_input import _peer, assert_usage_error, cli

pytestmark = pytest.mark.timeout(90)


def learn(metrics: MetricsBook, name: str, answers: int = 5) -> None:
    """`answers` successes of 100 tokens at 0.1 s to the first token, then 60 tokens/s."""
    for _ in range(answers):
        metrics.peer(name).succeeded(0.1 + 99 / 60, 0.1, 100)


def test_status_gives_every_peer_its_timeout_and_where_it_comes_from():
    # Given live peers (one learned, one hinting, one overridden, one new), a gone peer with
    # a history and an advertised worker that hints
    registry, metrics = Registry(1.0, 3), MetricsBook()
    for ident, name, hint in ((b"1", "fast", None), (b"2", "hinted", 9.0),
                              (b"3", "pinned", None), (b"4", "new", None)):
        registry.add(ident, b"generate", WorkerProfile(name=name, node_id=name, timeout_s=hint),
                     False, 0.0)
    for name in ("fast", "hinted", "pinned", "gone"):
        learn(metrics, name)
    adverts = {"n-far": WorkerAdvert(WorkerProfile(name="far", node_id="n-far", timeout_s=30.0),
                                     ("10.0.0.9",), 0.0)}
    policy = TimeoutPolicy(60.0, overrides={"pinned": 42.0}, learning=Learning(5.0, 600.0))
    # When the status is asked for
    status = status_map(registry, metrics, {}, adverts, 1.0, policy)
    peers = {p["name"]: p["timeout"] for p in json.loads(json.dumps(status["peers"]))}
    # Then each says the seconds for a 256-token candidate and the source
    assert peers["pinned"] == {"s": 42.0, "source": "override", "max_tokens": 256}
    assert peers["hinted"] == {"s": 9.0, "source": "hint", "max_tokens": 256}
    assert peers["new"] == {"s": 60.0, "source": "default", "max_tokens": 256}
    assert peers["far"] == {"s": 30.0, "source": "hint", "max_tokens": 256}
    for name in ("fast", "gone"):
        assert peers[name]["source"] == "learned" and 5.0 <= peers[name]["s"] < 60.0
    learned = policy.for_peer("fast", None, 256, metrics.peer("fast"))
    assert peers["fast"] == {"s": round(learned.s, 3), "source": "learned", "max_tokens": 256}


def test_peers_output_shows_the_timeout_and_its_source():
    peers = [{**_peer("gpu-box-with-a-long-name", True, "x" * 200),
              "timeout": {"s": 8.734, "source": "learned", "max_tokens": 256}},
             {**_peer("phone", False, "went silent"),
              "timeout": {"s": 60.0, "source": "default", "max_tokens": 256}}]
    # in a pipe: a line per peer under its counters
    lines = peer_lines(peers)
    assert "  timeout 8.7 s learned (for 256 tokens)" in lines
    assert "  timeout 60.0 s default (for 256 tokens)" in lines
    # on a terminal: beside each peer's machine, the numbers table unchanged, 80 columns
    out = io.StringIO()
    peers_table(peers, Console(file=out, width=80, force_terminal=True, color_system=None))
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "timeout" in text and "8.7 s learned" in text and "60.0 s default" in text
    assert "2.25" in text.splitlines()[1] and "42.5" in text.splitlines()[1]


@pytest.mark.parametrize("timeout", [None, "8", [], {"s": "8", "source": "learned"},
                                     {"s": float("nan"), "source": "learned"},
                                     {"s": 8.0, "source": "\x1b[31mevil"}, {"s": 8.0}],
                         ids=repr)
def test_a_strange_timeout_from_the_broker_is_not_shown(timeout):
    # Given a peer whose timeout is strange beside one whose timeout is fine
    strange = {**_peer("p", True), "timeout": timeout}
    fine = {**_peer("q", True), "timeout": {"s": 12.0, "source": "hint", "max_tokens": 256}}
    # Then the strange one shows no timeout line, the fine one its own
    lines = peer_lines([strange, fine])
    assert [line for line in lines if line.startswith("  timeout")] == \
        ["  timeout 12.0 s hint (for 256 tokens)"]
    out = io.StringIO()
    peers_table([strange, fine], Console(file=out, width=80, force_terminal=True,
                                         color_system=None))
    assert "evil" not in out.getvalue() and "nan" not in out.getvalue()
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert ["p", "-"] in [row[:2] for row in rows] and ["q", "12.0", "s", "hint"] in [r[:4] for r in rows]


@pytest.mark.parametrize("args, words", [
    (("--timeout-floor-s", "10", "--timeout-cap-s", "5"), ("--timeout-floor-s", "above the cap")),
    (("--timeout-cap-s", "0"), ("Invalid value for '--timeout-cap-s'", "at least 0.01")),
    (("--timeout-floor-s", "nan"), ("Invalid value for '--timeout-floor-s'", "not a finite")),
])
def test_the_broker_refuses_a_floor_and_cap_that_make_no_sense(args, words):
    r = cli("swarm-broker", "--bind", f"tcp://127.0.0.1:{free_port()}", "--http", "off",
            "--no-mdns", *args)
    assert_usage_error(r, *words)


def quick_worker(procs, port: int, name: str, slots: int):
    return synthetic(procs, port, name, "--slots", str(slots), "--tokens", "6",
                     "--token-delay-s", "0.01")


def peers_now(port: int) -> dict[str, dict]:
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--no-mdns", "--peers", "--json")
    assert r.returncode == 0, r.stderr
    return {p["name"]: p for p in json.loads(r.stdout)}


def test_a_real_swarm_learns_each_peers_timeout_and_says_so(procs):
    # Given a broker with a floor, a cap and an override for one peer, and two real
    # (synthetic) workers
    port = free_port()
    procs.broker(port, "--no-mdns", "--peer-timeout", "pinned=42", "--timeout-floor-s", "7.5",
                 "--timeout-cap-s", "300")
    quick_worker(procs, port, "fast", 2)
    quick_worker(procs, port, "pinned", 1)
    wait_for_peers(port, {"fast", "pinned"})
    # Then before any job the unknown peer is on the default, the other on its override
    before = peers_now(port)
    assert before["fast"]["timeout"] == {"s": 60.0, "source": "default", "max_tokens": 256}
    assert before["pinned"]["timeout"] == {"s": 42.0, "source": "override", "max_tokens": 256}
    # When a few jobs are answered (3 candidates over 3 slots: 2 on fast each time)
    for i in range(2):
        r = ask("--broker", f"tcp://127.0.0.1:{port}", "--no-mdns", "-k", "3", "-n", "8",
                "--no-quorum", "--json", f"question {i}")
        assert r.returncode == 0, r.stderr
        assert all(c["ok"] for c in json.loads(r.stdout)["candidates"])
    # Then the peer's timeout is learned, finite and within the floor and cap; the
    # override still wins over what was learned of the other
    after = peers_now(port)
    fast = after["fast"]["timeout"]
    assert fast["source"] == "learned" and 7.5 <= fast["s"] <= 300.0
    assert after["fast"]["metrics"]["successes"] >= 3
    assert after["pinned"]["timeout"] == {"s": 42.0, "source": "override", "max_tokens": 256}
    # and the plain --peers output says so too
    r = ask("--broker", f"tcp://127.0.0.1:{port}", "--no-mdns", "--peers")
    assert r.returncode == 0, r.stderr
    assert "s learned (for 256 tokens)" in r.stdout and "42.0 s override" in r.stdout
