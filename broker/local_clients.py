"""Clients inside the broker's own process (the HTTP API): the same job API, no socket.

A local client gets an identity no ZeroMQ peer can have: ROUTER makes 5-byte identities
that start with a zero byte, and a peer may not choose one that starts with zero, so a
longer zero-led identity is ours alone. The Outbox hands replies addressed to it to its
sink (the body map and whether it is the FINAL), in order, at once; nothing is packed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

Sink = Callable[[dict[str, Any], bool], None]
PREFIX = b"\x00local-"


class LocalClients:
    def __init__(self) -> None:
        self._sinks: dict[bytes, Sink] = {}

    def __contains__(self, identity: bytes) -> bool:
        return identity in self._sinks

    def __len__(self) -> int:
        return len(self._sinks)

    def open(self, sink: Sink) -> bytes:
        identity = PREFIX + os.urandom(8)
        self._sinks[identity] = sink
        return identity

    def close(self, identity: bytes) -> None:
        self._sinks.pop(identity, None)

    def deliver(self, identity: bytes, body: dict[str, Any], final: bool) -> bool:
        """Hand a reply to its local client; False if `identity` is not one of ours."""
        sink = self._sinks.get(identity)
        if sink is None:
            return identity.startswith(PREFIX)  # a closed local client: drop, never send
        sink(body, final)
        return True
