"""A worker slot's graceful stop: finish the candidate in hand, say DISCONNECT, read out.

Apart from the session because it is the end of a connection, not its life: once a stop
is asked for, the slot waits (within the grace) for the candidate in hand to be answered,
then tells the broker DISCONNECT so it drops the slot now rather than after a liveness,
and reads (and drops) what the broker still sends for a moment: a socket closed with
unread data resets the connection, which can lose the goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from common.messages import Disconnect
from worker.link import Link, send

log = logging.getLogger(__name__)

GOODBYE_LINGER_MS = 200
SHUTTING_DOWN = "the worker is shutting down"


def say_goodbye(sock: zmq.asyncio.Socket) -> None:
    """DISCONNECT, now or never (the broker may be gone too); what is queued still goes."""
    with contextlib.suppress(zmq.ZMQError):
        send(sock, Disconnect().to_frames())
    sock.setsockopt(zmq.LINGER, GOODBYE_LINGER_MS)


def goodbye(sock: zmq.asyncio.Socket, link: Link, stop_by: float,
            fields: Callable[..., dict]) -> bool:
    """Stopping: once the candidate in hand is answered (or the grace is over) say
    DISCONNECT, so the broker drops this slot now; True when it is said. `fields(**kv)`
    gives a log line the slot's own fields (peer, slot)."""
    work = link.work
    if work is not None or link.unsent is not None:
        if time.monotonic() < stop_by:
            return False
        job = work.task.job if work is not None and work.task is not None else None
        log.warning("the shutdown grace is over; leaving the candidate in hand to the broker",
                    extra=fields(job=job))
    # the goodbye goes; a FINAL the broker could not take yet (link.unsent) past the grace
    # does not: the broker re-dispatches that candidate once it reads the DISCONNECT
    say_goodbye(sock)
    log.info("slot stopped; told the broker DISCONNECT", extra=fields())
    return True


async def read_out(sock: zmq.asyncio.Socket, recv: asyncio.Future) -> asyncio.Future:
    """After a goodbye, read (and drop) what the broker still sends for a moment: a socket
    closed with unread data resets the connection, which can lose the goodbye. Returns the
    receive still pending, for the caller to cancel."""
    end = time.monotonic() + GOODBYE_LINGER_MS / 1000
    while (left := end - time.monotonic()) > 0:
        done, _ = await asyncio.wait({recv}, timeout=left)
        if not done or recv.exception() is not None:
            break
        recv = asyncio.ensure_future(sock.recv_multipart())
    return recv
