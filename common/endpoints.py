"""ZeroMQ endpoint checks, so a typo is one clear sentence and not a traceback."""

from __future__ import annotations

import re

from common.errors import ConfigError

_TCP = re.compile(r"^tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.:-]+?):(\*|\d{1,5})$")


def check(endpoint: str, bind: bool = False) -> str:
    """Return the endpoint if ZeroMQ can use it, else raise ConfigError saying what is wrong."""
    if endpoint.startswith(("ipc://", "inproc://")) and len(endpoint.split("://", 1)[1]) > 0:
        return endpoint
    m = _TCP.match(endpoint)
    if not m:
        raise ConfigError(f"'{endpoint}' is not a ZeroMQ endpoint like tcp://HOST:PORT")
    host, port = m.groups()
    if port == "*" and not bind or port != "*" and not 0 <= int(port) <= 65535:
        raise ConfigError(f"'{endpoint}' needs a port number between 0 and 65535")
    if host == "*" and not bind:
        raise ConfigError(f"'{endpoint}' names no host to connect to")
    return endpoint


def bind_host(endpoint: str) -> str | None:
    """The host part of a tcp:// endpoint ('*' for all interfaces); None for ipc:// and
    inproc://, which never leave this host."""
    m = _TCP.match(endpoint)
    return m.group(1) if m else None
