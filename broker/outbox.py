"""Messages the broker logic wants sent, queued so the logic itself never touches a socket.

Each message is marked droppable or not: a client that falls behind may lose progress
events (the FINAL repeats what matters) and a worker that stops reading may miss a
heartbeat, but a FINAL, a REQUEST or a CANCEL is never dropped.

A candidate's token events to one client merge while they wait in the queue (one loop
pass): the first keeps its place, the next ones join their text to it and bring the
latest count, so a slot that outpaces the socket costs one message a pass, and the client
still reads every token in order. Any other message to that client closes the merging, so
nothing overtakes it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from broker.local_clients import LocalClients
from common.codec import pack
from common.messages import ClientReply

Frames = list[bytes]


class Envelope(NamedTuple):
    frames: Frames
    droppable: bool = False


class _Tokens:
    """Token events of one candidate to one client, merged while they wait in the queue."""

    __slots__ = ("prefix", "service", "body", "texts")

    def __init__(self, prefix: Frames, service: bytes, body: dict[str, Any]) -> None:
        self.prefix, self.service, self.body, self.texts = prefix, service, body, [body["text"]]

    def add(self, body: dict[str, Any]) -> None:
        self.texts.append(body["text"])
        self.body = body  # the latest count, peer and all

    def envelope(self) -> Envelope:
        body = self.body if len(self.texts) == 1 else {**self.body, "text": "".join(self.texts)}
        return Envelope(self.prefix + ClientReply(self.service, (pack(body),), False).to_frames(),
                        True)


class Outbox:
    def __init__(self, local: LocalClients | None = None) -> None:
        self.queue: list[Envelope | _Tokens] = []
        self.local = local if local is not None else LocalClients()
        self._open: dict[bytes, dict[tuple, _Tokens]] = {}  # client -> (job, cand) -> merging
        self._merged = False  # the queue holds a _Tokens

    def __bool__(self) -> bool:
        return bool(self.queue)

    def send(self, identity: bytes, delimited: bool, message: Any, droppable: bool = False) -> None:
        """Queue one MDP message for a ROUTER peer, in the framing that peer uses."""
        prefix = [identity, b""] if delimited else [identity]
        if self._open:
            self._open.pop(identity, None)  # nothing overtakes this message
        self.queue.append(Envelope(prefix + message.to_frames(), droppable))

    def reply(self, client: bytes, delimited: bool, service: bytes, body: dict[str, Any],
              final: bool, droppable: bool = False) -> None:
        if self.local.deliver(client, body, final):
            return  # an in-process client (the HTTP API): handed over, never packed
        self.send(client, delimited, ClientReply(service, (pack(body),), final), droppable)

    def token(self, client: bytes, delimited: bool, service: bytes, body: dict[str, Any]) -> None:
        """A droppable token event (job, cand, text, ...): merged with this candidate's
        token event still waiting for the client, if any."""
        if self.local.deliver(client, body, False):
            return
        key = (body["job"], body["cand"])
        waiting = self._open.setdefault(client, {})
        merging = waiting.get(key)
        if merging is not None:
            merging.add(body)
            return
        prefix = [client, b""] if delimited else [client]
        waiting[key] = merging = _Tokens(prefix, service, body)
        self.queue.append(merging)
        self._merged = True

    def error(self, client: bytes, delimited: bool, service: bytes, text: str) -> None:
        self.reply(client, delimited, service, {"error": text}, final=True)

    def drain(self) -> list[Envelope]:
        out, self.queue = self.queue, []
        if not self._merged:
            return out
        self._open, self._merged = {}, False
        return [e.envelope() if type(e) is _Tokens else e for e in out]
