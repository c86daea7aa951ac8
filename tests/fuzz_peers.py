"""The peers of the fuzz harness, on real sockets: strangers, rogue workers, a vandal client,
and the one honest question whose answer is checked.

A rogue worker serves model "rogue" and answers its jobs wrongly: twice, a PARTIAL after
its FINAL, for a job or candidate it never had, or leaves the answer to the other rogue (a
reply for another worker's job). The vandal asks for model "rogue", so the rogues get work;
every job it asked for must end in exactly one FINAL. Honest questions ask for model
"synthetic" (worker/synthetic.py), so no rogue can touch them, and their text is known.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import zmq
import zmq.asyncio

from common import frames as F
from common.bodies import Chunk, GenerateRequest, Outcome, Sampling, Task
from common.codec import pack, unpack, unpack_body
from common.errors import ProtocolError
from common.messages import (ClientRequest, Disconnect, Ready, WorkerRequest, decode_client,
                             decode_worker, split_envelope)
from common.profile import WorkerProfile
from tests.fuzz_hostile import Hostile
from worker.synthetic import WORDS

SYNTH_TOKENS = 4
SYNTH_MODEL = "synthetic"


def expected_text(seed: int) -> str:
    """What worker/synthetic.py answers a candidate of this seed (SYNTH_TOKENS pieces)."""
    return "".join(WORDS[(seed + i) % len(WORDS)] + " " for i in range(SYNTH_TOKENS))


def socket(ctx: zmq.asyncio.Context, endpoint: str, kind: int = zmq.DEALER) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def drain(sock: zmq.asyncio.Socket) -> list[list[bytes]]:
    """Everything already received, without waiting."""
    got = []
    with contextlib.suppress(zmq.Again):
        while True:
            got.append(sock.recv_multipart(zmq.NOBLOCK).result())  # a future already done
    return got


def send_now(sock: zmq.asyncio.Socket, frames: list[bytes]) -> bool:
    """Send without waiting; False where the peer cannot take it now."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK).result()
    except zmq.Again:
        return False
    return True


def question(seed: int, model: str = SYNTH_MODEL, timeout_s: float | None = None) -> list[bytes]:
    req = GenerateRequest(Sampling(prompt="fuzz?", max_tokens=SYNTH_TOKENS), candidates=1,
                          strategy="first", seed=seed, model=model, timeout_s=timeout_s)
    return ClientRequest(F.SERVICE_GENERATE, (pack(req.to_map()),)).to_frames()


async def ask(ctx: zmq.asyncio.Context, endpoint: str, seed: int, timeout_s: float = 60.0) -> str:
    """One honest question on a fresh connection; the winner's text, checked."""
    sock = socket(ctx, endpoint)
    try:
        await sock.send_multipart(question(seed))
        while True:
            assert await sock.poll(int(timeout_s * 1000)), "no answer to an honest question"
            reply = decode_client(split_envelope(await sock.recv_multipart())[1])
            if reply.final:
                break
        result = unpack(reply.body[0])
        assert "error" not in result, f"an honest question failed: {result['error']}"
        text = result["winner"]["text"]
        assert text == expected_text(seed), f"wrong answer {text!r} for seed {seed}"
        return text
    finally:
        sock.close()


class Rogue:
    """A worker for model "rogue" that answers every job wrongly, one way or another."""

    def __init__(self, ctx, endpoint: str, name: str, hostile: Hostile):
        self.sock, self.name, self.hostile = socket(ctx, endpoint), name, hostile
        self.profile = WorkerProfile(name=name, node_id=name, model="rogue", slots=1,
                                     seed_variation=True, cancel=True).to_frame()
        self.other: Rogue | None = None
        self.ready()

    def ready(self) -> None:
        self.send(Ready(F.SERVICE_GENERATE, self.profile).to_frames())

    def send(self, frames: list[bytes]) -> None:
        send_now(self.sock, frames)

    def pump(self) -> None:
        self.send([F.WORKER, F.W_HEARTBEAT])
        for frames in drain(self.sock):
            try:
                msg = decode_worker(split_envelope(frames)[1])
            except ProtocolError:
                continue
            if isinstance(msg, Disconnect):
                self.ready()  # it was cut off for what it did: straight back for more
            elif isinstance(msg, WorkerRequest):
                self._misbehave(msg)

    def _misbehave(self, req: WorkerRequest) -> None:
        try:
            task = Task.from_map(unpack_body(req.body))
        except ProtocolError:
            return
        final = [F.WORKER, F.W_FINAL, req.client, b""]
        ok = final + [pack(Outcome(task.job, task.cand, "rogue").to_map())]
        partial = [F.WORKER, F.W_PARTIAL, req.client, b"",
                   pack(Chunk(task.job, task.cand, 0, "r").to_map())]
        stale = final + [pack(Outcome("stale-" + task.job, task.cand, "x").to_map())]
        never = final + [pack(Outcome(task.job, task.cand + 7, "x").to_map())]
        way = self.hostile.rng.randrange(6)
        if way == 4 and self.other is not None:
            self.other.send(ok)  # the other rogue answers this one's job; this one stays mum
            return
        for frames in ([ok, ok], [ok, partial], [stale], [never], [], [partial, ok])[way]:
            self.send(frames)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Vandal:
    """A client whose jobs feed the rogues; it counts what it asked and what came back."""

    sock: zmq.asyncio.Socket
    asked: int = 0
    finals: int = 0

    def ask(self, seed: int) -> None:
        self.asked += send_now(self.sock, question(seed, model="rogue", timeout_s=1.0))

    def pump(self) -> None:
        for frames in drain(self.sock):
            reply = decode_client(split_envelope(frames)[1])
            self.finals += reply.final and reply.service == F.SERVICE_GENERATE
