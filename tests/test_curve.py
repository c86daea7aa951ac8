"""CurveZMQ: key files on disk, the broker's door (ZAP with allowed keys) on real loopback
sockets with the real worker session and client library, the pin in mDNS records, and the
warning for a broker open beyond loopback without --secure."""

from __future__ import annotations

import asyncio
import logging
import os
import stat

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner

from broker.zap import REFUSED
from client.client import SwarmClient
from common import mdns
from common.bodies import GenerateRequest, Sampling
from common.browsers import BrokerFinder
from common.curve import (BROKER, AllowedKeys, ClientKeys, KeyPair, load_keypair, pinned_key,
                          write_keypair)
from common.errors import ConfigError, RequestFailed
from common.profile import WorkerProfile
from tests.conftest import run
from tests.curve_util import allow, broker_dir, keys_in, server_keys, until
from tests.test_discovery import FakeInfo
from tests.test_worker_session import SlowBackend
from tests.wire import running_broker
from worker.session import SessionConfig, WorkerSession


# -- keys on disk ----------------------------------------------------------------------------
def test_a_secret_key_is_born_0600_and_pyzmq_reads_both_files(tmp_path, monkeypatch):
    # Given a permissive umask, and a watch on the moment the secret file gets its name
    modes = {}
    link = os.link

    def watched_link(src, dst, *a, **kw):
        modes[os.path.basename(dst)] = stat.S_IMODE(os.stat(src).st_mode)
        return link(src, dst, *a, **kw)
    monkeypatch.setattr(os, "link", watched_link)
    pair = KeyPair.generate()
    old = os.umask(0)
    try:
        public, secret = write_keypair(tmp_path / "keys", "worker", pair)
    finally:
        os.umask(old)
    # Then the secret had mode 0600 before it was ever at its path, and keeps it
    assert modes == {"worker.key_secret": 0o600}
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    # And both files are the ZPL certificates pyzmq and czmq read
    assert zmq.auth.load_certificate(secret) == (pair.public.encode(), pair.secret.encode())
    assert zmq.auth.load_certificate(public) == (pair.public.encode(), None)
    assert load_keypair(tmp_path / "keys", "worker", "swarm-worker keygen") == pair


def test_an_existing_secret_is_kept_unless_forced(tmp_path):
    first, second = KeyPair.generate(), KeyPair.generate()
    write_keypair(tmp_path, "broker", first)
    with pytest.raises(ConfigError, match="exists already.*--force") as refused:
        write_keypair(tmp_path, "broker", second)
    assert first.public in str(refused.value)  # it names the key it keeps
    assert load_keypair(tmp_path, "broker", "x") == first
    write_keypair(tmp_path, "broker", second, force=True)
    assert load_keypair(tmp_path, "broker", "x") == second
    assert stat.S_IMODE((tmp_path / "broker.key_secret").stat().st_mode) == 0o600


def test_unusable_keys_are_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="no worker key in .*swarm-worker keygen"):
        load_keypair(tmp_path, "worker", "swarm-worker keygen")
    write_keypair(tmp_path, "worker", KeyPair.generate())
    secret = tmp_path / "worker.key_secret"
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="may be read by others.*chmod 600"):
        load_keypair(tmp_path, "worker", "x")
    secret.chmod(0o600)
    other = KeyPair.generate()  # a secret file whose public key is another pair's
    secret.write_text(secret.read_text().replace(
        secret.read_text().split('public-key = "')[1][:40], other.public))
    with pytest.raises(ConfigError, match="does not belong"):
        load_keypair(tmp_path, "worker", "x")
    with pytest.raises(ConfigError, match="neither a CURVE key"):
        pinned_key("not-a-key", tmp_path)
    with pytest.raises(ConfigError, match="no broker key is pinned.*--broker-key"):
        pinned_key(None, tmp_path)
    (tmp_path / "junk.key").write_bytes(b"\xff" * 70_000)
    with pytest.raises(ConfigError, match="too large"):
        pinned_key(str(tmp_path / "junk.key"), tmp_path)


def test_a_pin_is_a_z85_key_a_key_file_or_broker_key_in_the_key_directory(tmp_path):
    pair = keys_in(tmp_path, BROKER)
    assert pinned_key(pair.public, tmp_path / "elsewhere") == pair.public
    assert pinned_key(str(tmp_path / "broker.key"), tmp_path / "elsewhere") == pair.public
    assert pinned_key(None, tmp_path) == pair.public
    bare = tmp_path / "bare.txt"
    bare.write_text(f"# the broker on gpu-box\n{pair.public}\n")
    assert pinned_key(str(bare), tmp_path) == pair.public


def test_allowed_keys_follow_their_directory_and_skip_junk(tmp_path, caplog):
    allowed = AllowedKeys(tmp_path / "allowed")
    with pytest.raises(ConfigError, match="no allowed-keys directory"):
        allowed.check()
    (tmp_path / "allowed").mkdir()
    a, b = KeyPair.generate(), KeyPair.generate()
    allow(tmp_path, "a", a)
    (tmp_path / "allowed" / "junk.key").write_text("hello")
    (tmp_path / "allowed" / "b.key_secret").write_text(f'public-key = "{b.public}"')
    assert allowed.check() == 1 and allowed.allows(a.public) and not allowed.allows(b.public)
    assert "skipped junk.key" in caplog.text
    # a key added or removed counts from the next handshake, without a restart
    allow(tmp_path, "b", b)
    assert allowed.allows(b.public)
    (tmp_path / "allowed" / "a.key").unlink()
    assert not allowed.allows(a.public)


# -- the broker's door, on real loopback sockets ------------------------------------------------
def session(ctx, endpoint: str, pair: KeyPair | None, server: str | None) -> WorkerSession:
    curve = ClientKeys(pair, server) if pair is not None else None
    config = SessionConfig(endpoint, heartbeat_s=0.1, reconnect_min_s=0.05, reconnect_max_s=0.1,
                           curve=curve)
    return WorkerSession(ctx, config, WorkerProfile(name=f"w{id(pair)}"), SlowBackend())


def spy_on_senders(broker) -> set[bytes]:
    """The identities of every message the broker's loop handles from now on."""
    senders, handle = set(), broker.handle

    def handled(frames, now):
        senders.add(frames[0])
        handle(frames, now)
    broker.handle = handled
    return senders


def question() -> GenerateRequest:
    return GenerateRequest(Sampling(prompt="hi", max_tokens=3), candidates=1)


def test_a_secure_broker_serves_allowed_keys_and_refuses_everyone_else(ctx, tmp_path):
    worker, client = KeyPair.generate(), KeyPair.generate()
    stranger, impostor = KeyPair.generate(), KeyPair.generate()
    directory, broker_pair = broker_dir(tmp_path, ("worker", worker), ("client", client))

    async def body():
        async with running_broker(ctx, heartbeat_s=0.1, curve=server_keys(directory, broker_pair)
                                  ) as broker:
            # Given a worker and a client whose keys are allowed, pinning this broker
            good = session(ctx, broker.endpoint, worker, broker_pair.public)
            tasks = [asyncio.create_task(good.run())]
            try:
                # Then the worker registers and the client's question is answered
                await until(lambda: len(broker.registry) == 1, 20.0, "the allowed worker's READY")
                asker = SwarmClient(broker.endpoint, ctx, 10.0,
                                    curve=ClientKeys(client, broker_pair.public))
                assert (await asker.generate(question(), 20.0))["winner"]["text"] == "done"
                senders = spy_on_senders(broker)
                # When a worker with an unknown key, a plain one, and one pinning another
                # broker's key try to register, and a stranger and a plain client ask
                tasks += [asyncio.create_task(s.run()) for s in (
                    session(ctx, broker.endpoint, stranger, broker_pair.public),
                    session(ctx, broker.endpoint, None, None),
                    session(ctx, broker.endpoint, worker, impostor.public))]
                refusals = {}
                for name, keys in (("stranger", ClientKeys(stranger, broker_pair.public)),
                                   ("plain", None),
                                   ("wrong pin", ClientKeys(client, impostor.public))):
                    with pytest.raises(RequestFailed) as refused:
                        await SwarmClient(broker.endpoint, ctx, 10.0, curve=keys).status(10.0)
                    refusals[name] = str(refused.value)
                await until(lambda: broker.stats[REFUSED] >= 2, 20.0, "the refusals")
                await asyncio.sleep(1.0)  # several reconnects of each refused worker
                # Then none of them got in: nothing of theirs reached the broker's loop
                assert len(broker.registry) == 1
                assert senders == {broker.registry.all()[0].identity}  # its heartbeats alone
                assert "refused this client's key" in refusals["stranger"]
                assert "security mechanism" in refusals["plain"]
                assert "secure handshake" in refusals["wrong pin"]
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    run(body(), timeout_s=90.0)


# -- the pin in mDNS records ------------------------------------------------------------------
def test_a_broker_record_carries_its_key_and_a_bad_one_is_dropped():
    key = KeyPair.generate().public
    txt = mdns.broker_txt("lab", 7555, key=key)
    assert txt[mdns.K.KEY] == key and all(len(f"{k}={v}") <= 255 for k, v in txt.items())
    assert mdns.broker_from_txt(txt, 7555).key == key
    assert mdns.broker_from_txt(mdns.broker_txt("lab", 7555), 7555).key == ""
    assert mdns.broker_from_txt({**txt, "key": "short"}, 7555).key == ""
    assert mdns.broker_from_txt({**txt, "key": b"\xff" * 40}, 7555).key == ""


def test_a_pinned_finder_uses_only_the_broker_with_its_key_and_says_why_once(caplog):
    mine, other = KeyPair.generate().public, KeyPair.generate().public
    finder = BrokerFinder(None, "lab", pin=mine)
    caplog.set_level(logging.WARNING)
    for _ in range(3):  # records are resolved again and again: the reason is said once
        finder._resolved("plain", FakeInfo(mdns.broker_txt("lab", 7001), 7001, ("127.0.0.1",)))
        finder._resolved("rogue", FakeInfo(mdns.broker_txt("lab", 7002, key=other), 7002,
                                           ("127.0.0.1",)))
    assert finder.current() is None
    said = [r.getMessage() for r in caplog.records if "ignoring swarm broker" in r.getMessage()]
    assert len(said) == 2
    assert any("advertises no key" in s for s in said) and any(other in s for s in said)
    finder._resolved("ours", FakeInfo(mdns.broker_txt("lab", 7003, key=mine), 7003,
                                      ("127.0.0.1",)))
    assert finder.current() == "tcp://127.0.0.1:7003"
    # an unpinned finder takes the latest broker, keyed or not, as before
    plain = BrokerFinder(None, "lab")
    plain._resolved("rogue", FakeInfo(mdns.broker_txt("lab", 7002, key=other), 7002,
                                      ("127.0.0.1",)))
    assert plain.current() == "tcp://127.0.0.1:7002"


# -- the broker's command line ----------------------------------------------------------------
@pytest.mark.parametrize("bind, secure, warned", [
    ("tcp://*:7555", False, True), ("tcp://0.0.0.0:7555", False, True),
    ("tcp://192.0.2.7:7555", False, True), ("tcp://eth0:7555", False, True),
    ("tcp://*:7555", True, False), ("tcp://127.0.0.1:7555", False, False),
    ("tcp://localhost:7555", False, False), ("tcp://[::1]:7555", False, False),
    ("ipc:///tmp/swarm.sock", False, False),
])
def test_the_broker_warns_when_it_listens_beyond_loopback_without_secure(
        monkeypatch, caplog, tmp_path, bind, secure, warned):
    """Nothing binds: the broker's socket and its serving loop are stood in for."""
    import broker.cli
    from broker.server import Broker
    monkeypatch.setattr(Broker, "bind", lambda self: "tcp://127.0.0.1:1")
    monkeypatch.setattr(broker.cli, "run_until_signalled", lambda coro, **_: coro.close())
    directory, _ = broker_dir(tmp_path)
    args = ["--bind", bind, "--no-mdns", "--http", "off"]
    args += ["--secure", "--key-dir", str(directory)] if secure else []
    r = CliRunner().invoke(broker.cli.main, args)
    assert r.exit_code == 0, r.output
    lines = [rec.getMessage() for rec in caplog.records if "without --secure" in rec.getMessage()]
    assert len(lines) == warned
    if warned:
        assert lines[0].startswith(f"the broker listens on {bind} without --secure")
        assert [rec.levelname for rec in caplog.records if "--secure" in rec.getMessage()] \
            == ["WARNING"]
