"""broker/generate.py driven purely, for the tests: fake slots in a Registry, replies fed
in, the Outbox read back."""

from __future__ import annotations

from broker.generate import GenerateService
from broker.metrics import MetricsBook
from broker.outbox import Outbox
from broker.policy import CANCEL_GRACE_S, TimeoutPolicy
from broker.registry import Registry
from common.bodies import Chunk, GenerateRequest, Outcome, Task
from common.codec import pack, unpack
from common.messages import ClientReply, WorkerReply, WorkerRequest, decode
from common.profile import WorkerProfile

CLIENT = b"client-1"


class Swarm:
    """A GenerateService with fake slots; `sent()` decodes what it queued since the last call."""

    def __init__(self, default_s: float = 60.0, cancel_grace_s: float = CANCEL_GRACE_S):
        self.registry = Registry(interval_s=1.0, liveness=3)
        self.metrics = MetricsBook()
        self.outbox = Outbox()
        self.service = GenerateService(self.registry, self.metrics, self.outbox,
                                       TimeoutPolicy(default_s), cancel_grace_s=cancel_grace_s)

    def add(self, identity: bytes, seed_variation: bool = False, timeout_s: float | None = None,
            cancel: bool = False, name: str | None = None) -> None:
        """A slot; its peer is named `name`, or its identity in capitals."""
        name = name or identity.decode().upper()
        profile = WorkerProfile(name=name, node_id=name, seed_variation=seed_variation,
                                timeout_s=timeout_s, cancel=cancel)
        self.registry.add(identity, b"generate", profile, False, 0.0)

    def submit(self, now: float = 0.0, **body) -> None:
        request = GenerateRequest.from_map({"prompt": "2+2=", **body})
        self.service.submit(CLIENT, False, request, now)

    def reply(self, identity: bytes, now: float, text: str = "4", error: str | None = None,
              final: bool = True, finish: str = "stop") -> None:
        slot = self.registry.get(identity)
        job, cand = slot.job
        body = Outcome(job, cand, text, finish, {"completion_tokens": 2}, error=error) if final \
            else Chunk(job, cand, 0, text)
        self.service.on_reply(slot, WorkerReply(CLIENT, (pack(body.to_map()),), final), now)

    def sent(self) -> list[tuple[bytes, object]]:
        out = []
        for frames, _ in self.outbox.drain():
            delimited, msg = decode(frames[1:])
            assert not delimited
            if isinstance(msg, (WorkerRequest, ClientReply)):
                assert len(msg.body) == 1
                body = unpack(msg.body[0])
                msg = Task.from_map(body) if isinstance(msg, WorkerRequest) else (msg.final, body)
            out.append((frames[0], msg))
        return out
