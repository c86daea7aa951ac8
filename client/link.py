"""Where a request stands with its broker: pure logic fed with monitor events and `now`.

`Link` is one attempt on one connection; `Retries` decides whether a failed attempt is
sent again (the lazy pirate of the zguide) and after what pause.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import zmq

log = logging.getLogger(__name__)

LOST_GRACE_S = 1.0  # after a drop, how long replies already on their way may still come in
RETRIES = 3  # sends of a request again after its broker was lost or did not answer
RETRY_PAUSE_S = 0.5  # before the first retry; doubling after each
RETRY_PAUSE_MAX_S = 4.0
# a handshake that fails says why: CURVE refused our key, another mechanism, or a wrong key
_REFUSALS = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused this client's key (is it in the broker's "
                                     "allowed keys?)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "failed the handshake: it speaks another protocol or "
                                         "security mechanism (does one side run --secure, "
                                         "and the other not?)",
    # libzmq reports a plain client at a secure broker either way: both name --secure
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed the secure handshake (is it the broker whose "
                                          "key is pinned? does one side run --secure, and "
                                          "the other not?)",
}
REFUSED_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@dataclass(slots=True)
class Link:
    """Where a request's one connection stands: pure logic fed with monitor events and `now`."""

    broker: str
    start: float
    connect_s: float  # give up reaching the broker after this
    reply_s: float    # give up on the FINAL after this, once connected
    connected: bool = False
    lost_at: float | None = None
    back: bool = False  # the handshake succeeded again after a drop
    refused: str | None = None  # why the broker's handshake failed, before any succeeded

    def on_event(self, event: int, now: float) -> None:
        if event in _REFUSALS and not self.connected:
            self.refused = _REFUSALS[event]
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.back = self.lost_at is not None
            self.connected = True
        elif event == zmq.EVENT_DISCONNECTED and self.connected and self.lost_at is None:
            self.lost_at = now
            log.info("lost the connection to the broker at %s", self.broker)

    def deadline(self) -> float:
        if self.refused is not None:
            return self.start  # it will not get better by waiting
        if self.back:
            return self.lost_at  # the new broker session does not know our request: give up now
        if self.lost_at is not None:
            return self.lost_at + LOST_GRACE_S
        return self.start + (self.reply_s if self.connected else self.connect_s)

    def failure(self) -> str:
        if self.refused is not None:
            return f"the broker at {self.broker} {self.refused}"
        if self.lost_at is not None:
            again = " (it came back, but without the request)" if self.back else ""
            return f"lost the broker at {self.broker} mid-request{again}"
        if not self.connected:
            return (f"the broker at {self.broker} could not be reached within {self.connect_s:g} s "
                    "(the connect timeout; is swarm-broker running there?)")
        return f"the broker at {self.broker} sent no final answer within {self.reply_s:g} s"


@dataclass(slots=True)
class Retries:
    """Lazy pirate: after a failed attempt, whether to send the request again and after
    what pause. Pure logic. A broker that was never reached at all is not tried again (that
    is the answer: nobody is there); once one was reached, a lost or silent broker, and a
    retry that cannot reach it, each use one of `limit` retries."""

    limit: int  # a refused handshake is never retried: it never reached the broker
    used: int = 0
    reached: bool = False  # some attempt reached the broker

    def pause_after(self, link: Link) -> float | None:
        """The pause before the next attempt, or None: give up."""
        self.reached = self.reached or link.connected
        if not self.reached or self.used >= self.limit:
            return None
        self.used += 1
        return min(RETRY_PAUSE_MAX_S, RETRY_PAUSE_S * 2 ** (self.used - 1))

    def note(self, link: Link) -> str:
        """What to tell a person about the retry just granted."""
        return f"{link.failure()}; retrying ({self.used}/{self.limit})"

    def gave_up(self, link: Link) -> str:
        if not self.used:
            return link.failure()
        return f"{link.failure()} (gave up after {self.used} retr{'y' if self.used == 1 else 'ies'})"
