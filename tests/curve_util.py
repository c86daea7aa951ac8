"""Helpers for the CurveZMQ tests: key directories as the three programs keep them, and
the command-line flags that point a program at them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from broker.zap import ServerKeys
from common.curve import ALLOWED_DIR_NAME, BROKER, AllowedKeys, KeyPair, write_keypair


def keys_in(directory: Path, name: str) -> KeyPair:
    """A fresh key pair written as `name` in `directory`, as `keygen` writes it."""
    pair = KeyPair.generate()
    write_keypair(directory, name, pair)
    return pair


def allow(broker_dir: Path, name: str, pair: KeyPair) -> None:
    """Put `pair`'s public key into the broker's allowed keys, as an operator copies it."""
    allowed = broker_dir / ALLOWED_DIR_NAME
    allowed.mkdir(exist_ok=True)
    (allowed / f"{name}.key").write_text(f'curve\n    public-key = "{pair.public}"\n')


def broker_dir(root: Path, *allowed: tuple[str, KeyPair]) -> tuple[Path, KeyPair]:
    """A broker's key directory with its key pair and these peers allowed."""
    directory = root / "broker-keys"
    pair = keys_in(directory, BROKER)
    (directory / ALLOWED_DIR_NAME).mkdir()
    for name, peer in allowed:
        allow(directory, name, peer)
    return directory, pair


def server_keys(directory: Path, pair: KeyPair) -> ServerKeys:
    return ServerKeys(pair, AllowedKeys(directory / ALLOWED_DIR_NAME))


async def until(predicate, timeout_s: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} never came true"
        await asyncio.sleep(0.02)
