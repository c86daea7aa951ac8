"""Messages the broker logic wants sent, queued so the logic itself never touches a socket."""

from __future__ import annotations

from typing import Any

from common.codec import pack
from common.messages import ClientReply

Frames = list[bytes]


class Outbox:
    def __init__(self) -> None:
        self.queue: list[Frames] = []

    def send(self, identity: bytes, delimited: bool, message: Any) -> None:
        """Queue one MDP message for a ROUTER peer, in the framing that peer uses."""
        prefix = [identity, b""] if delimited else [identity]
        self.queue.append(prefix + message.to_frames())

    def reply(self, client: bytes, delimited: bool, service: bytes, body: dict[str, Any],
              final: bool) -> None:
        self.send(client, delimited, ClientReply(service, (pack(body),), final))

    def error(self, client: bytes, delimited: bool, service: bytes, text: str) -> None:
        self.reply(client, delimited, service, {"error": text}, final=True)

    def drain(self) -> list[Frames]:
        out, self.queue = self.queue, []
        return out
