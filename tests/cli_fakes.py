"""Raw MDP/0.2 fakes on loopback for the CLI tests: a broker that records and answers, and a
worker that takes a job and holds it. Plain (blocking) pyzmq in a thread, so a test can drive
console-script subprocesses from ordinary code."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from common import frames as F
from common.codec import pack, unpack
from common.messages import ClientReply, Ready, decode_client, split_envelope
from common.profile import WorkerProfile


@dataclass
class Seen:
    """One client REQUEST the fake broker received."""

    client: bytes
    service: bytes
    body: dict


# answer(request) -> the replies to send back, each (body, final); [] answers nothing
Answer = Callable[[Seen], list[tuple[dict, bool]]]


def winner_final(text: str, cand: int = 0, peer: str = "fake") -> dict:
    """A generate FINAL as the broker sends it, with one candidate that won."""
    return {"winner": {"cand": cand, "peer": peer, "text": text, "finish_reason": "stop"},
            "candidates": [{"cand": cand, "peer": peer, "text": text, "ok": True, "error": None,
                            "latency_s": 0.1, "tokens": 3}],
            "strategy": "similarity", "votes": {str(cand): 1.0}, "usage": {}}


class FakeBroker:
    """A ROUTER on a free loopback port that records every client REQUEST and answers as told."""

    def __init__(self, answer: Answer):
        self.answer = answer
        self.seen: list[Seen] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            identity, *frames = self.sock.recv_multipart()
            msg = decode_client(split_envelope(frames)[1])
            seen = Seen(identity, msg.service, unpack(msg.body[0]) if msg.body else {})
            with self._cond:
                self.seen.append(seen)
                self._cond.notify_all()
            for body, final in self.answer(seen):
                reply = ClientReply(msg.service, (pack(body),), final)
                self.sock.send_multipart([identity, *reply.to_frames()])

    def wait_for(self, service: bytes, count: int = 1, timeout_s: float = 30.0) -> list[Seen]:
        """Block until `count` requests to `service` came in; returns them."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(got := [s for s in self.seen if s.service == service]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{count} request(s) to {service!r} never came: "
                                         f"{[s.service for s in self.seen]}")
                self._cond.wait(left)
            return got

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(linger=0)
        self._ctx.term()


class HoldingWorker:
    """A raw worker that registers, beats, and takes jobs without ever answering them."""

    def __init__(self, endpoint: str, name: str, heartbeat_s: float):
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        profile = WorkerProfile(name=name, node_id=f"{name}-{os.getpid()}", cancel=True,
                                heartbeat_s=heartbeat_s)
        self.sock.send_multipart(Ready(F.SERVICE_GENERATE, profile.to_frame()).to_frames())
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            while self.sock.poll(0):
                self.sock.recv_multipart()  # requests and heartbeats: taken, never answered
            self.sock.send_multipart([F.WORKER, F.W_HEARTBEAT])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(linger=0)
        self._ctx.term()
