"""Swarm overhead: N tokens from the model called directly vs through client -> broker -> worker.

Both paths use the same model file, prompt, seed and token count, and run alternately in
one process run (these machines are noisy), so the printed ratio compares like with like.
The broker and worker are real subprocesses on loopback; both paths run llama.cpp with the
worker's planned threads (or --threads N). Goal: ratio <= 1.05.

    .venv/bin/python bench/overhead.py [--tokens 128] [--rounds 7] [--threads auto|N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.client import SwarmClient  # noqa: E402
from common.bodies import GenerateRequest, Sampling, Task  # noqa: E402
from worker.backend import LlamaCppBackend  # noqa: E402
from worker.launch import prepare  # noqa: E402
from worker.policy import Requested  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea, there lived"
SEED = 1234
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def direct(backend: LlamaCppBackend, sampling: Sampling) -> tuple[float, str, int]:
    start = time.perf_counter()
    out = backend.generate(Task("bench", 0, SEED, sampling), lambda _: None, threading.Event())
    return time.perf_counter() - start, out.text, out.usage["completion_tokens"]


async def through_swarm(client: SwarmClient, sampling: Sampling) -> tuple[float, str, int]:
    request = GenerateRequest(sampling, candidates=1, seed=SEED, timeout_s=120)
    start = time.perf_counter()
    result = await client.generate(request, 120, on_event=lambda _: None)
    elapsed = time.perf_counter() - start
    cand = result["candidates"][0]
    return elapsed, result["winner"]["text"], cand["tokens"]


def wait_ready(client: SwarmClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if any(p["live"] for p in asyncio.run(client.status(2))["peers"]):
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit("the benchmark worker never registered")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", default="auto", help="llama.cpp threads on both paths [auto: the plan's]")
    args = ap.parse_args()
    threads = "auto" if args.threads == "auto" else int(args.threads)
    setup = prepare(None, Requested(instances=1, threads=threads), progress=False)
    model, threads = setup.path, setup.plan.threads.value  # the same on both paths
    sampling = Sampling(prompt=PROMPT, max_tokens=args.tokens, temperature=0.8)
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([str(BIN / "swarm-broker"), "--bind", endpoint, "--no-mdns", "--http", "off"],
                              env=env, stderr=subprocess.DEVNULL),
             subprocess.Popen([str(BIN / "swarm-worker"), "--broker", endpoint, "--name", "bench",
                               "--model", str(model), "--instances", "1", "--threads",
                               str(threads), "--no-mdns"], env=env, stderr=subprocess.DEVNULL)]
    try:
        backend = LlamaCppBackend(model, n_threads=threads)
        client = SwarmClient(endpoint)
        wait_ready(client)
        direct(backend, sampling)  # warm both paths once
        asyncio.run(through_swarm(client, sampling))
        d_times, s_times = [], []
        for r in range(args.rounds):
            d, d_text, d_tok = direct(backend, sampling)
            s, s_text, s_tok = asyncio.run(through_swarm(client, sampling))
            if d_text != s_text:
                raise SystemExit("the two paths generated different text for the same seed")
            d_times.append(d)
            s_times.append(s)
            print(f"round {r}: {d_tok} tokens  direct {d:.3f} s  swarm {s:.3f} s  "
                  f"ratio {s / d:.3f}")
        dm, sm = statistics.median(d_times), statistics.median(s_times)
        print(f"median over {args.rounds} rounds, {d_tok} tokens: direct {dm:.3f} s "
              f"({d_tok / dm:.1f} tok/s), swarm {sm:.3f} s ({s_tok / sm:.1f} tok/s)")
        paired = statistics.median(s / d for s, d in zip(s_times, d_times))
        print(f"overhead ratio swarm/direct: {sm / dm:.3f} of medians, {paired:.3f} median of "
              "paired rounds (goal <= 1.05)")
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(10)


if __name__ == "__main__":
    main()
