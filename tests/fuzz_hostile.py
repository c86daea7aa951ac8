"""Hostile messages, drawn from a seeded random generator: what a stranger, a vandal client
or a mad broker might send. Pure: frames in, nothing sent (tests/fuzz_harness.py sends).

Kinds: random frames, a wrong protocol tag, unknown commands, missing frames, truncated and
bent bodies, msgpack bombs, the real body schemas with a field of the wrong type, and
READY profiles that lie. Oversized messages are the harness's (they cost a connection).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from common import frames as F
from common.codec import pack
from tests.fuzz_values import SCHEMAS

SERVICES = (F.SERVICE_GENERATE, F.SERVICE_STATUS, F.SERVICE_CANCEL, F.MMI_SERVICE, b"mmi.x",
            b"echo", b"nobody-offers-this")
BIG = 16 * 1024 * 1024 - 64  # a body just under MAX_BODY_BYTES


def small_bombs() -> list[bytes]:
    """Tiny bodies that claim to be huge, or nest deep."""
    key = b"\x81\xa3job"  # {"job": ...}
    return [key + b"\xdd\xff\xff\xff\xff", key + b"\xdf\xff\xff\xff\xff",
            key + b"\xdb\xff\xff\xff\xff", key + b"\xc6\xff\xff\xff\xff",
            key + b"\xd4\x01\x00", key + b"\x91" * 5000 + b"\xc0",
            b"\x81\xa1k" * 2000 + b"\xc0", b"\xc1", b""]


def big_bombs() -> list[bytes]:
    """16 MiB bodies that msgpack alone would turn into ~1 GiB of objects."""
    n = BIG - 16
    return [b"\x81\xa3job\xdd" + struct.pack(">I", n) + b"\x90" * n,
            b"\x81\xa3job\xdd" + struct.pack(">I", n) + b"\x80" * n,
            b"\x81\xa3job\xdd" + struct.pack(">I", n) + b"\xc0" * n]


class Hostile:
    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.bombs = small_bombs()

    def pick(self, options):
        return options[self.rng.randrange(len(options))]

    def blob(self, hi: int = 48) -> bytes:
        return self.rng.randbytes(self.rng.randrange(hi))

    def value(self, depth: int = 0):
        r = self.rng.random()
        if depth < 3 and r < 0.15:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(4))]
        if depth < 3 and r < 0.3:
            return {str(self.rng.randrange(9)): self.value(depth + 1)
                    for _ in range(self.rng.randrange(4))}
        return self.pick([None, True, False, -1, 0, 2**31, 2**64 - 1, -2**63, 0.5, float("nan"),
                          float("inf"), -1e300, "", "x" * self.rng.randrange(300), b"\xff",
                          "job1", "generate", "majority", "\u0000"])

    def body(self) -> bytes:
        """One body frame: a real schema bent, cut or replaced, or a bomb."""
        r = self.rng.random()
        if r < 0.15:
            return self.pick(self.bombs)
        if r < 0.25:
            return self.blob()
        _, good, _ = self.pick(SCHEMAS)
        m = dict(good)
        for _ in range(1 + self.rng.randrange(3)):
            key = self.pick(sorted(m) + ["", "extra"])
            if self.rng.random() < 0.2:
                m.pop(key, None)
            else:
                m[key] = self.value()
        frame = pack(m)
        if r < 0.35:
            return frame[:self.rng.randrange(len(frame))]
        if r < 0.45:
            i = self.rng.randrange(len(frame))
            return frame[:i] + bytes([self.rng.randrange(256)]) + frame[i + 1:]
        return frame

    # -- to a broker ------------------------------------------------------------------------
    def to_broker(self) -> list[bytes]:
        """One hostile message, as a DEALER sends it (no identity)."""
        return self.pick(self._broker_kinds)()

    @property
    def _broker_kinds(self) -> list[Callable[[], list[bytes]]]:
        return [self._random, self._wrong_tag, self._unknown_command, self._missing_frames,
                self._client_request, self._client_request, self._client_request,
                self._client_reply, self._stranger_worker, self._lying_ready]

    def _random(self) -> list[bytes]:
        return [self.blob() for _ in range(1 + self.rng.randrange(6))]

    def _wrong_tag(self) -> list[bytes]:
        tag = self.pick([b"MDPC01", b"MDPW01", b"mdpc02", b"MDPC02\x00", b"MDP", b""])
        return [tag, F.C_REQUEST, F.SERVICE_GENERATE, self.body()]

    def _unknown_command(self) -> list[bytes]:
        known = {F.C_REQUEST, F.C_PARTIAL, F.C_FINAL, *F.WORKER_COMMAND_NAMES}
        command = self.pick([bytes([b]) for b in range(256) if bytes([b]) not in known]
                            + [b"", b"\x01\x01"])
        return [self.pick([F.CLIENT, F.WORKER]), command, F.SERVICE_GENERATE, self.body()]

    def _missing_frames(self) -> list[bytes]:
        full = self.pick([[F.CLIENT, F.C_REQUEST, F.SERVICE_GENERATE, self.body()],
                          [F.WORKER, F.W_READY, F.SERVICE_GENERATE, self.body()],
                          [F.WORKER, F.W_FINAL, self.blob(8), b"", self.body()],
                          [F.WORKER, F.W_CANCEL, self.blob(8)]])
        return full[:1 + self.rng.randrange(len(full) - 1)]

    def _client_request(self) -> list[bytes]:
        delimiter = [b""] if self.rng.random() < 0.2 else []
        frames = [self.body() for _ in range(self.pick([0, 1, 1, 1, 2]))]
        return delimiter + [F.CLIENT, F.C_REQUEST, self.pick(SERVICES), *frames]

    def _client_reply(self) -> list[bytes]:
        return [F.CLIENT, self.pick([F.C_PARTIAL, F.C_FINAL]), F.SERVICE_GENERATE, self.body()]

    def _stranger_worker(self) -> list[bytes]:
        """A worker command from an identity the broker never registered."""
        return self.pick([[F.WORKER, F.W_HEARTBEAT], [F.WORKER, F.W_DISCONNECT],
                          [F.WORKER, F.W_FINAL, self.blob(8), b"", self.body()],
                          [F.WORKER, F.W_PARTIAL, self.blob(8), b"", self.body()],
                          [F.WORKER, F.W_REQUEST, self.blob(8), b"", self.body()],
                          [F.WORKER, F.W_CANCEL, self.blob(8)]])

    def _lying_ready(self) -> list[bytes]:
        service = self.pick([F.SERVICE_STATUS, b"mmi.service", b"bad service", b"x" * 300,
                             b"rogue-service"])
        return [F.WORKER, F.W_READY, service, self.body()]

    # -- to a worker ------------------------------------------------------------------------
    def to_worker(self) -> list[bytes]:
        """One hostile message a mad broker sends a worker (never DISCONNECT: that one is
        obeyed, as it should be)."""
        r = self.rng.random()
        if r < 0.3:
            return [F.WORKER, F.W_REQUEST, self.blob(8), b"", self.body()]
        if r < 0.4:
            return [F.WORKER, F.W_CANCEL, self.blob(8)]
        if r < 0.5:
            return [F.WORKER, self.pick([F.W_READY, F.W_PARTIAL, F.W_FINAL]), b"generate"]
        if r < 0.6:
            return [F.WORKER, self.pick([b"\x00", b"\x08", b"\xff", b""])]
        if r < 0.7:
            return [F.CLIENT, F.C_FINAL, b"generate", self.body()]
        if r < 0.8:
            return [F.WORKER, F.W_REQUEST]  # no client address
        return self._random()
