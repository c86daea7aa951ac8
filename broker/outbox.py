"""Messages the broker logic wants sent, queued so the logic itself never touches a socket.

Each message is marked droppable or not: a client that falls behind may lose progress
events (the FINAL repeats what matters) and a worker that stops reading may miss a
heartbeat, but a FINAL, a REQUEST or a CANCEL is never dropped.
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


class Outbox:
    def __init__(self, local: LocalClients | None = None) -> None:
        self.queue: list[Envelope] = []
        self.local = local if local is not None else LocalClients()

    def __bool__(self) -> bool:
        return bool(self.queue)

    def send(self, identity: bytes, delimited: bool, message: Any, droppable: bool = False) -> None:
        """Queue one MDP message for a ROUTER peer, in the framing that peer uses."""
        prefix = [identity, b""] if delimited else [identity]
        self.queue.append(Envelope(prefix + message.to_frames(), droppable))

    def reply(self, client: bytes, delimited: bool, service: bytes, body: dict[str, Any],
              final: bool, droppable: bool = False) -> None:
        if self.local.deliver(client, body, final):
            return  # an in-process client (the HTTP API): handed over, never packed
        self.send(client, delimited, ClientReply(service, (pack(body),), final), droppable)

    def error(self, client: bytes, delimited: bool, service: bytes, text: str) -> None:
        self.reply(client, delimited, service, {"error": text}, final=True)

    def drain(self) -> list[Envelope]:
        out, self.queue = self.queue, []
        return out
