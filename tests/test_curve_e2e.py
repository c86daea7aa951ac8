"""CurveZMQ as a user runs it: `keygen` on each program, then a --secure swarm of real
processes (the real bundled model) on loopback, found through mDNS by its pinned key, that
answers its own client and refuses strangers, plain peers and workers pinning another key."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from common.curve import KeyPair
from common.discovery import broker_mdns, find_broker
from tests.conftest import BIN, FAST_HB, ask, free_port, run
from tests.test_discovery import swarm_name


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def one_sentence(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    for word in words:
        assert word in errors[0], errors[0]


def keygen(*args: str) -> dict:
    """Run a keygen command with --json; its answer."""
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# -- keygen ---------------------------------------------------------------------------------
def test_keygen_on_each_program_and_no_key_overwritten_unasked(tmp_path):
    # Given a box with nothing on it yet
    keys = tmp_path / "keys"
    # When each program makes its keys
    broker = keygen("swarm-broker", "keygen", "--dir", str(keys))
    worker = keygen("swarm-worker", "keygen", "--key-dir", str(keys))
    client = keygen("swarm-ask", "--keygen", "--key-dir", str(keys))
    # Then each secret is 0600, each public key is printed, and the broker has allowed/
    for made, name in ((broker, "broker"), (worker, "worker"), (client, "client")):
        assert made["secret_file"] == str(keys / f"{name}.key_secret")
        assert stat.S_IMODE(os.stat(made["secret_file"]).st_mode) == 0o600
        assert made["public_key"] in Path(made["public_file"]).read_text()
    assert (keys / "allowed").is_dir() and len({broker["public_key"], worker["public_key"],
                                                client["public_key"]}) == 3
    # And a second keygen keeps the key, saying so, until --force
    again = cli("swarm-broker", "keygen", "--dir", str(keys))
    one_sentence(again, 1, "exists already", broker["public_key"], "--force")
    forced = keygen("swarm-broker", "keygen", "--dir", str(keys), "--force")
    assert forced["public_key"] != broker["public_key"]
    plain = cli("swarm-worker", "keygen", "--key-dir", str(keys), "--force")
    assert plain.returncode == 0 and plain.stdout.startswith("public key: ")
    # And --help shows the subcommand, while every old invocation stays an option list
    assert "keygen" in cli("swarm-broker", "--help").stdout
    assert "keygen" in cli("swarm-worker", "--help").stdout
    assert "--keygen" in cli("swarm-ask", "--help").stdout


def test_secure_without_keys_or_misused_flags_is_one_sentence(tmp_path):
    empty = str(tmp_path / "none")
    one_sentence(cli("swarm-worker", "--secure", "--key-dir", empty), 1,
                 "no worker key", "swarm-worker keygen")
    one_sentence(cli("swarm-broker", "--secure", "--key-dir", empty, "--no-mdns", "--http",
                     "off", "--bind", f"tcp://127.0.0.1:{free_port()}"), 1,
                 "no broker key", "swarm-broker keygen")
    one_sentence(cli("swarm-ask", "--secure", "--key-dir", empty, "hi"), 1,
                 "no client key", "swarm-ask --keygen")
    keygen("swarm-worker", "keygen", "--key-dir", empty)
    one_sentence(cli("swarm-worker", "--secure", "--key-dir", empty), 1,
                 "no broker key is pinned", "--broker-key")
    one_sentence(cli("swarm-worker", "--broker-key", KeyPair.generate().public), 2,
                 "--broker-key goes with --secure")
    one_sentence(cli("swarm-ask", "--local", "--secure", "hi"), 2, "--secure", "--local")
    keygen("swarm-broker", "keygen", "--key-dir", empty)
    shutil.rmtree(Path(empty) / "allowed")
    one_sentence(cli("swarm-broker", "--secure", "--key-dir", empty, "--no-mdns", "--http",
                     "off", "--bind", f"tcp://127.0.0.1:{free_port()}"), 1,
                 "no allowed-keys directory")


# -- the pin in mDNS, with real zeroconf on loopback ---------------------------------------------
def test_a_pinned_look_finds_only_the_broker_with_that_key():
    swarm = swarm_name()
    key, other = KeyPair.generate().public, KeyPair.generate().public

    async def body():
        async with broker_mdns(swarm, "tcp://127.0.0.1:7301") as plain:
            if plain is None:
                pytest.skip("zeroconf cannot start on loopback here")
            async with broker_mdns(swarm, "tcp://127.0.0.1:7302", key=key):
                assert await find_broker(swarm, 20.0, pin=key) == "tcp://127.0.0.1:7302"
                assert await find_broker(swarm, 1.5, pin=other) is None
    run(body(), timeout_s=90.0)


# -- a secure swarm of real processes ----------------------------------------------------------
def wait_for_log(path: Path, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{path.name} never said {text!r}"
        time.sleep(0.2)


def secure_peers(args: tuple[str, ...], names: set[str], timeout_s: float = 90.0) -> dict:
    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        r = ask(*args, "--peers", "--json", "--timeout-s", "3", "--connect-timeout-s", "3")
        last = r.stderr
        if r.returncode == 0:
            peers = {p["name"]: p for p in json.loads(r.stdout)}
            if names <= {n for n, p in peers.items() if p["live"]}:
                return peers
        time.sleep(0.3)
    raise AssertionError(f"peers {names} never became live: {last[-1000:]}")


@pytest.mark.model
def test_a_secure_swarm_found_by_its_pin_answers_its_own_and_refuses_strangers(
        procs, model_path, tmp_path):
    # Given three boxes' key directories, each made by its program's keygen, and the
    # public keys copied as the README says
    swarm, port = swarm_name(), free_port()
    boxes = {name: tmp_path / name for name in ("broker", "worker", "client", "stranger")}
    broker_key = keygen("swarm-broker", "keygen", "--dir", str(boxes["broker"]))["public_key"]
    keygen("swarm-worker", "keygen", "--dir", str(boxes["worker"]))
    keygen("swarm-ask", "--keygen", "--key-dir", str(boxes["client"]))
    keygen("swarm-ask", "--keygen", "--key-dir", str(boxes["stranger"]))
    shutil.copy(boxes["worker"] / "worker.key", boxes["broker"] / "allowed" / "gpu-box.key")
    shutil.copy(boxes["client"] / "client.key", boxes["broker"] / "allowed" / "laptop.key")
    shutil.copy(boxes["broker"] / "broker.key", boxes["worker"] / "broker.key")
    # When the broker runs --secure on mDNS, and two workers look for it there: one pinning
    # its key, one pinning another broker's
    broker = procs.broker(port, "--swarm", swarm, "--secure", "--key-dir", str(boxes["broker"]))
    model = ("--heartbeat-s", FAST_HB, "--reconnect-s", "0.1", "--n-ctx", "256",
             "--instances", "1", "--model", str(model_path), "--swarm", swarm, "--secure")
    procs.start("swarm-worker", "--name", "pinned", "--key-dir", str(boxes["worker"]), *model,
                name="pinned")
    lost = procs.start("swarm-worker", "--name", "misled", "--key-dir", str(boxes["worker"]),
                       "--broker-key", KeyPair.generate().public, *model, name="misled")
    # Then the pinned worker is found and serves, and the client's question is answered
    # (the client, too, finds the broker on mDNS by the key it pins)
    own = ("--swarm", swarm, "--secure", "--key-dir", str(boxes["client"]),
           "--broker-key", broker_key)
    peers = secure_peers(own, {"pinned"})
    r = ask(*own, "--json", "-k", "1", "-n", "4", "Hello")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["winner"]["peer"] == "pinned"
    # And the worker pinning another key ignores this broker, saying why, and never joins
    wait_for_log(lost.log_path, "ignoring swarm broker")
    for seen in (peers, secure_peers(own, {"pinned"})):  # its mDNS record may show; no slot
        assert not seen.get("misled", {}).get("connected")
    # And a stranger's key, a plain client and a wrong pin each get one clear sentence
    endpoint = f"tcp://127.0.0.1:{port}"
    stranger = ask("--broker", endpoint, "--secure", "--key-dir", str(boxes["stranger"]),
                   "--broker-key", broker_key, "-n", "4", "Hello")
    one_sentence(stranger, 1, "refused this client's key")
    plain = ask("--broker", endpoint, "-n", "4", "Hello")
    one_sentence(plain, 1, "does one side run --secure")  # libzmq says PROTOCOL or NO_DETAIL
    wrong = ask("--broker", endpoint, "--secure", "--key-dir", str(boxes["client"]),
                "--broker-key", KeyPair.generate().public, "-n", "4", "Hello")
    one_sentence(wrong, 1, "secure handshake")
    # And the broker logged the refused key, and counts it
    wait_for_log(broker.log_path, "refused a peer whose key")
    status = run(_status(endpoint, boxes["client"], broker_key))
    assert status["broker"]["refused_keys"] >= 1


async def _status(endpoint: str, key_dir: Path, broker_key: str) -> dict:
    from client.client import SwarmClient
    from common.curve import ClientKeys, load_keypair
    keys = ClientKeys(load_keypair(key_dir, "client", "x"), broker_key)
    return await SwarmClient(endpoint, curve=keys).status(10.0)
