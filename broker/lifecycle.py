"""The broker's life as systemd sees it: READY once it serves, the watchdog, a graceful stop.

Apart from the socket loop because none of it is about one message: READY goes out once the
ROUTER is bound and the mDNS advert settled; a stop refuses new jobs, gives the running ones
a grace, then fails the rest, and the last flush delivers what it can (reading, and dropping,
what workers still send, so a socket closed with unread data does not reset the goodbye).
The loop asks `Lifecycle` what is due and does the sending itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from broker.delivery import Delivery
from broker.generate import GenerateService
from common.sdnotify import Notifier

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0  # how long running jobs may take to finish once a stop is asked for
LAST_FLUSH_S = 1.0       # how long a stopping broker tries to deliver what is backed up
GOODBYE_S = 0.3          # and at least how long it reads (and drops) what workers still send


class Lifecycle:
    """READY, the watchdog and the graceful stop of one broker."""

    def __init__(self, notifier: Notifier, generate: GenerateService, grace_s: float):
        self.notifier = notifier  # systemd's: READY, STOPPING, the watchdog
        self.generate = generate
        self.grace_s = grace_s
        self.stop_at: float | None = None  # a graceful stop was asked for: the grace ends then
        self.mdns_settled = True  # the CLI clears it until its mDNS advert is registered
        self.ready_sent = False

    @property
    def stopping(self) -> bool:
        return self.stop_at is not None

    def shutdown(self) -> None:
        """New jobs are refused, running ones have the grace to finish."""
        if self.stop_at is not None:
            return
        self.stop_at = time.monotonic() + self.grace_s
        self.generate.drain()
        running = len(self.generate.jobs)
        log.info("shutting down: %d job(s) running get %g s to finish", running, self.grace_s)
        self.notifier.stopping(f"draining {running} job(s) within {self.grace_s:g} s")

    def advertised_now(self) -> None:
        """The mDNS advert is registered (or failed to be): READY may go out."""
        self.mdns_settled = True

    def notify(self, now: float, endpoint: str | None) -> None:
        """Feed the watchdog (from the loop itself: a wedged loop stops feeding it), and say
        READY once bound, the HTTP API up (the CLI starts it first) and advertised."""
        self.notifier.watchdog(now)
        if not self.ready_sent and self.mdns_settled and self.stop_at is None:
            self.ready_sent = True
            self.notifier.ready(f"serving on {endpoint}")

    def over(self, now: float) -> bool:
        """Whether a stop was asked for and its grace is over (or every job ended); the
        jobs still running are failed with a FINAL that says so."""
        if self.stop_at is None or (now < self.stop_at and not self.generate.drained):
            return False
        failed = self.generate.fail_all(
            now, f"it did not finish within the {self.grace_s:g} s grace")
        if failed:
            log.warning("shutting down: %d job(s) did not finish in time; failed them", failed)
        return True


async def last_flush(sock: zmq.asyncio.Socket, delivery: Delivery,
                     flush: Callable[[float], None], batch: int) -> None:
    """Deliver what backed-up peers can still take, for a moment at most, reading (and
    dropping, `batch` at a time) what workers still send meanwhile: a socket closed with
    unread data resets the connection, and a reset can lose the DISCONNECT just sent."""
    start = time.monotonic()
    while (now := time.monotonic()) < start + LAST_FLUSH_S and \
            (delivery.pending or now < start + GOODBYE_S):
        if await sock.poll(10, zmq.POLLIN):
            with contextlib.suppress(zmq.Again):
                for _ in range(batch):
                    await sock.recv_multipart(zmq.NOBLOCK)
        flush(time.monotonic())
