"""A fake systemd notify socket: what a daemon tells systemd, as a test reads it."""

from __future__ import annotations

import socket
import time
from pathlib import Path


class NotifySocket:
    """An AF_UNIX datagram socket bound where $NOTIFY_SOCKET will point (a path, or an
    abstract "@name"); `wait_for` reads messages until one carries the wanted line."""

    def __init__(self, where: Path | str):
        self.address = str(where)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bound = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        self.sock.bind(bound)
        self.messages: list[list[str]] = []  # each datagram's lines, in order of arrival

    def lines(self) -> list[str]:
        return [line for message in self.messages for line in message]

    def wait_for(self, line: str, timeout_s: float = 60.0, count: int = 1) -> list[str]:
        """Until `line` has come `count` times; returns every line seen so far."""
        deadline = time.monotonic() + timeout_s
        while self.lines().count(line) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{line!r} x{count} never came; got {self.lines()}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append(data.decode().split("\n"))
        return self.lines()

    def close(self) -> None:
        self.sock.close()


class Client:
    """A blocking MDP/0.2 client on its own DEALER (one request at a time on it)."""

    def __init__(self, ctx, port: int):
        import zmq
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def send(self, service: bytes, body: dict) -> None:
        from common.codec import pack
        from common.messages import ClientRequest
        self.sock.send_multipart(ClientRequest(service, (pack(body),)).to_frames())

    def next(self, timeout_s: float = 60.0) -> tuple[bool, dict]:
        """The next reply: (final, body)."""
        from common.codec import unpack
        from common.messages import decode_client, split_envelope
        if not self.sock.poll(int(timeout_s * 1000)):
            raise AssertionError(f"no reply within {timeout_s} s")
        msg = decode_client(split_envelope(self.sock.recv_multipart())[1])
        return msg.final, unpack(msg.body[0])

    def until(self, wanted, timeout_s: float = 60.0) -> dict:
        """Read replies until one for which `wanted(final, body)` holds; returns its body."""
        while True:
            final, body = self.next(timeout_s)
            if wanted(final, body):
                return body
            assert not final, f"the job ended first: {body}"

    def final(self, timeout_s: float = 60.0) -> dict:
        return self.until(lambda final, body: final, timeout_s)

    def close(self) -> None:
        self.sock.close(linger=0)


def broker_status(ctx, port: int) -> dict:
    """swarm.status, on a fresh DEALER."""
    from common import frames as F
    client = Client(ctx, port)
    try:
        client.send(F.SERVICE_STATUS, {})
        return client.final(20.0)
    finally:
        client.close()


def wait_until(what: str, ok, timeout_s: float = 60.0, every_s: float = 0.05):
    """Poll `ok()` until it returns something true; the timeout only bounds a failure."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = ok()
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError(f"never saw {what}")
