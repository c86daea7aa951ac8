"""The processes of the relay benchmark that are not Swarm's own: a raw MDP worker that
blasts PARTIALs, a bare pyzmq ROUTER relay (the ceiling), and the client that reads them.

    python bench/relay_peers.py sender ENDPOINT COUNT   # READY, then on each REQUEST: COUNT
                                                        # PARTIALs as fast as it can, a FINAL
    python bench/relay_peers.py bare ENDPOINT           # bind a ROUTER, swap identities

The sender is the same process for both relays and sends identical frames to both; it
blocks on a full pipe rather than drop, so every relay sees every PARTIAL.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import frames as F  # noqa: E402
from common.bodies import Chunk, Outcome  # noqa: E402
from common.codec import pack, unpack  # noqa: E402
from common.messages import WorkerRequest, decode_worker, split_envelope  # noqa: E402
from common.profile import WorkerProfile  # noqa: E402

MODEL = "blast"     # the sender's model: requests name it, so no other worker is chosen
BEAT_S = 0.5        # the sender's heartbeat while idle


def piece(i: int) -> str:
    return f"t{i} "


def sender(endpoint: str, count: int) -> None:
    """A raw MDP worker: on each REQUEST, `count` PARTIALs of one token each, then a FINAL."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    profile = WorkerProfile(name="blast", node_id=f"blast{os.getpid()}", model=MODEL,
                            backend="blast", cancel=True)
    sock.send_multipart([F.WORKER, F.W_READY, F.SERVICE_GENERATE, profile.to_frame()])
    while True:
        if not sock.poll(int(BEAT_S * 1000)):
            sock.send_multipart([F.WORKER, F.W_HEARTBEAT])
            continue
        msg = decode_worker(split_envelope(sock.recv_multipart())[1])
        if isinstance(msg, WorkerRequest):
            _blast(sock, msg, count)
        elif type(msg).__name__ == "Disconnect":
            return


def _blast(sock: zmq.Socket, req: WorkerRequest, count: int) -> None:
    task = unpack(req.body[0])
    job, cand = task["job"], task["cand"]
    head = [F.WORKER, F.W_PARTIAL, req.client, b""]
    bodies = [pack(Chunk(job, cand, i, piece(i)).to_map()) for i in range(count)]
    for body in bodies:  # blocks on a full pipe: nothing is dropped
        sock.send_multipart([*head, body])
    text = "".join(piece(i) for i in range(count))
    final = Outcome(job, cand, text, "length", usage={"prompt_tokens": 1,
                                                     "completion_tokens": count},
                    timings={"ttft_s": 0.0, "total_s": 0.0})
    sock.send_multipart([F.WORKER, F.W_FINAL, req.client, b"", pack(final.to_map())])


def bare(endpoint: str) -> None:
    """The ceiling: a ROUTER loop that forwards a worker's replies to the client that asked,
    swapping only the identity frame. It blocks on a full pipe (ROUTER_MANDATORY)."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.bind(endpoint)
    worker = client = b""
    while True:
        frames = sock.recv_multipart()
        if frames[0] == worker:
            if frames[2] in (F.W_PARTIAL, F.W_FINAL):
                frames[0] = client
                sock.send_multipart(frames)
        elif frames[1] == F.WORKER and frames[2] == F.W_READY:
            worker = frames[0]
        elif frames[1] == F.CLIENT:  # a client's request: the worker gets it as a Task
            client = frames[0]
            sock.send_multipart([worker, F.WORKER, F.W_REQUEST, client, b"", *frames[4:]])


def read_replies(sock: zmq.Socket, timeout_s: float, worker_frames: bool) -> dict:
    """Read every reply to one request until its FINAL: each PARTIAL's arrival time and
    body (decoded after the clock stopped) and the FINAL's time and body. `worker_frames`: the bare relay forwards the
    worker's own frames (MDPW02 PARTIAL ... body), the broker sends client frames."""
    final_cmd, at = (F.W_FINAL, 4) if worker_frames else (F.C_FINAL, 3)
    bodies, times, clock = [], [], time.perf_counter
    while True:
        if not sock.poll(int(timeout_s * 1000)):
            raise SystemExit(f"no reply within {timeout_s} s ({len(bodies)} so far)")
        frames = sock.recv_multipart()
        if frames[1] == final_cmd:
            return {"times": times, "last": clock(), "partials": bodies,
                    "final": unpack(frames[at])}
        times.append(clock())
        bodies.append(frames[at])


def main(argv: list[str]) -> None:
    if argv[0] == "sender":
        sender(argv[1], int(argv[2]))
    elif argv[0] == "bare":
        bare(argv[1])
    else:
        raise SystemExit("usage: relay_peers.py sender ENDPOINT COUNT | bare ENDPOINT")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
