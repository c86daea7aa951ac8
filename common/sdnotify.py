"""Tell systemd how a daemon is doing (sd_notify), without a dependency.

One datagram per message on the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an
abstract name spelt with a leading "@"). Where it is unset this is a no-op, and nothing
here ever raises: a failed send is logged once and the daemon goes on.

The watchdog: where $WATCHDOG_USEC is set (and $WATCHDOG_PID is unset or names this
process) `watchdog(now)` sends WATCHDOG=1 once every half interval. The daemon calls it from
its own loop, so a wedged loop stops feeding it and systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

READY, STOPPING, WATCHDOG = "READY=1", "STOPPING=1", "WATCHDOG=1"
MAX_STATUS_CHARS = 200  # of a STATUS= line


def _address(name: str) -> str | bytes:
    """An abstract name ("@name") becomes the kernel's spelling, a leading NUL byte."""
    return b"\0" + name[1:].encode() if name.startswith("@") else name


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """The watchdog's interval systemd asked for, or None where it asked for none (or asked
    another process: $WATCHDOG_PID); a bad value counts as none."""
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if 0 < usec < 2**64 else None  # systemd's own is a 64-bit count


class Notifier:
    """`Notifier.from_env()` in a CLI; `Notifier()` (no socket) is the no-op default."""

    def __init__(self, address: str | None = None, watchdog_s: float | None = None):
        self.address = address or None
        self.watchdog_s = watchdog_s if self.address else None
        self.next_feed_at = 0.0
        self.count = 0  # messages sent
        self._failed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"), watchdog_interval_s(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str | None = None) -> None:
        self.send(READY, *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str | None = None) -> None:
        self.send(STOPPING, *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self, now: float) -> None:
        """Feed the watchdog if half its interval passed since the last feed."""
        if self.watchdog_s is None or now < self.next_feed_at:
            return
        self.next_feed_at = now + self.watchdog_s / 2
        self.send(WATCHDOG)

    def send(self, *lines: str) -> bool:
        if self.address is None:
            return False
        text = "\n".join(line.replace("\n", " ")[:MAX_STATUS_CHARS] for line in lines)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(text.encode(), _address(self.address))
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.warning("cannot tell systemd %s on %s: %s (not said again)",
                            lines[0], self.address, e)
            return False
        self.count += 1
        return True
