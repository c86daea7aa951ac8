"""MDP/0.2 commands as frozen dataclasses that own their framing.

`to_frames()` gives the frames after any ROUTER identity; `decode_client` and
`decode_worker` parse them back and raise ProtocolError on anything malformed. Some
MDP/0.2 libraries put an empty delimiter before the protocol tag (REQ-style): `split_envelope`
accepts it and reports it, so the broker can answer each peer in its own framing.
"""

from __future__ import annotations

from dataclasses import dataclass

from common import frames as F
from common.errors import ProtocolError


class _Framed:
    """Gives each command `from_frames`, the inverse of its `to_frames`."""

    __slots__ = ()

    @classmethod
    def from_frames(cls, frames: list[bytes]):
        """Parse frames (after any ROUTER identity) that must hold this command."""
        _, message = decode(frames)
        if not isinstance(message, cls):
            raise ProtocolError(f"expected {cls.__name__}, got {type(message).__name__}")
        return message


@dataclass(frozen=True, slots=True)
class ClientRequest(_Framed):
    service: bytes
    body: tuple[bytes, ...]

    def to_frames(self) -> list[bytes]:
        return [F.CLIENT, F.C_REQUEST, self.service, *self.body]


@dataclass(frozen=True, slots=True)
class ClientReply(_Framed):
    service: bytes
    body: tuple[bytes, ...]
    final: bool

    def to_frames(self) -> list[bytes]:
        command = F.C_FINAL if self.final else F.C_PARTIAL
        return [F.CLIENT, command, self.service, *self.body]


@dataclass(frozen=True, slots=True)
class Ready(_Framed):
    service: bytes
    profile: bytes | None = None  # extension frame: msgpack WorkerProfile

    def to_frames(self) -> list[bytes]:
        extra = [self.profile] if self.profile is not None else []
        return [F.WORKER, F.W_READY, self.service, *extra]


@dataclass(frozen=True, slots=True)
class WorkerRequest(_Framed):
    client: bytes
    body: tuple[bytes, ...]

    def to_frames(self) -> list[bytes]:
        return [F.WORKER, F.W_REQUEST, self.client, b"", *self.body]


@dataclass(frozen=True, slots=True)
class WorkerReply(_Framed):
    client: bytes
    body: tuple[bytes, ...]
    final: bool

    def to_frames(self) -> list[bytes]:
        command = F.W_FINAL if self.final else F.W_PARTIAL
        return [F.WORKER, command, self.client, b"", *self.body]


@dataclass(frozen=True, slots=True)
class Heartbeat(_Framed):
    def to_frames(self) -> list[bytes]:
        return [F.WORKER, F.W_HEARTBEAT]


@dataclass(frozen=True, slots=True)
class Disconnect(_Framed):
    def to_frames(self) -> list[bytes]:
        return [F.WORKER, F.W_DISCONNECT]


@dataclass(frozen=True, slots=True)
class Cancel(_Framed):
    client: bytes

    def to_frames(self) -> list[bytes]:
        return [F.WORKER, F.W_CANCEL, self.client]


ClientMessage = ClientRequest | ClientReply
WorkerMessage = Ready | WorkerRequest | WorkerReply | Heartbeat | Disconnect | Cancel


def split_envelope(frames: list[bytes]) -> tuple[bool, list[bytes]]:
    """Strip an optional empty delimiter before the protocol tag; say whether it was there."""
    if frames and frames[0] == b"":
        return True, frames[1:]
    return False, frames


def _service(frame: bytes) -> bytes:
    if not frame or len(frame) > F.MAX_SERVICE_BYTES or not frame.isascii():
        raise ProtocolError("service name must be 1-255 printable ASCII bytes")
    if not all(32 < b < 127 for b in frame):
        raise ProtocolError("service name must be printable ASCII without spaces")
    return frame


def _body(frames: list[bytes]) -> tuple[bytes, ...]:
    """A body of any number of frames, bounded by size; each frame costs its overhead too."""
    if sum(len(f) for f in frames) + F.FRAME_OVERHEAD_BYTES * len(frames) > F.MAX_BODY_BYTES:
        raise ProtocolError(f"body is larger than {F.MAX_BODY_BYTES} bytes")
    return tuple(frames)


def decode_client(frames: list[bytes]) -> ClientMessage:
    """Parse frames that start with the MDPC02 tag."""
    if len(frames) < 3 or frames[0] != F.CLIENT:
        raise ProtocolError("not an MDP/0.2 client message")
    command, service, body = frames[1], _service(frames[2]), frames[3:]
    if command == F.C_REQUEST:
        return ClientRequest(service, _body(body))
    if command in (F.C_PARTIAL, F.C_FINAL):
        return ClientReply(service, _body(body), final=command == F.C_FINAL)
    raise ProtocolError(f"unknown client command {command!r}")


def _addressed(frames: list[bytes], name: str) -> tuple[bytes, tuple[bytes, ...]]:
    """(client address, body) of REQUEST/PARTIAL/FINAL; the empty delimiter may be missing."""
    if len(frames) < 3:
        raise ProtocolError(f"{name} needs a client address frame")
    rest = frames[3:]
    if rest and rest[0] == b"":
        rest = rest[1:]
    return frames[2], _body(rest)


def decode_worker(frames: list[bytes]) -> WorkerMessage:
    """Parse frames that start with the MDPW02 tag."""
    if len(frames) < 2 or frames[0] != F.WORKER:
        raise ProtocolError("not an MDP/0.2 worker message")
    command = frames[1]
    name = F.WORKER_COMMAND_NAMES.get(command)
    if name is None:
        raise ProtocolError(f"unknown worker command {command!r}")
    if command == F.W_READY:
        if len(frames) not in (3, 4):
            raise ProtocolError("READY takes a service and at most one profile frame")
        return Ready(_service(frames[2]), frames[3] if len(frames) == 4 else None)
    if command in (F.W_HEARTBEAT, F.W_DISCONNECT):
        return Heartbeat() if command == F.W_HEARTBEAT else Disconnect()
    if command == F.W_CANCEL:
        if len(frames) != 3:
            raise ProtocolError("CANCEL takes exactly one client address frame")
        return Cancel(frames[2])
    client, body = _addressed(frames, name)
    if command == F.W_REQUEST:
        return WorkerRequest(client, body)
    return WorkerReply(client, body, final=command == F.W_FINAL)


def decode(frames: list[bytes]) -> tuple[bool, ClientMessage | WorkerMessage]:
    """Parse what a ROUTER received after the identity: (delimited, message)."""
    delimited, frames = split_envelope(frames)
    if frames and frames[0] == F.CLIENT:
        return delimited, decode_client(frames)
    if frames and frames[0] == F.WORKER:
        return delimited, decode_worker(frames)
    raise ProtocolError("message has no MDP/0.2 protocol tag")
