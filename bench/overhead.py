"""Swarm overhead: N tokens from the model called directly vs through client -> broker -> worker,
over MDP (swarm's own client) and over the broker's OpenAI HTTP API (the `openai` package).

All paths use the same model file, prompt, seed and token count, and run alternately in
one process run (these machines are noisy), so the printed ratios compare like with like.
The broker and worker are real subprocesses on loopback; every path runs llama.cpp with the
worker's planned threads (or --threads N). Goal: ratios <= 1.05.

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

import openai

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


def through_http(api: openai.OpenAI, sampling: Sampling) -> tuple[float, str, int]:
    start = time.perf_counter()
    reply = api.completions.create(model="swarm", prompt=sampling.prompt, seed=SEED,
                                   max_tokens=sampling.max_tokens,
                                   temperature=sampling.temperature,
                                   extra_body={"swarm": {"candidates": 1, "timeout_s": 120}})
    return time.perf_counter() - start, reply.choices[0].text, reply.usage.completion_tokens


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
    port, http = free_port(), free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([str(BIN / "swarm-broker"), "--bind", endpoint, "--no-mdns",
                               "--http", f"127.0.0.1:{http}"], env=env, stderr=subprocess.DEVNULL),
             subprocess.Popen([str(BIN / "swarm-worker"), "--broker", endpoint, "--name", "bench",
                               "--model", str(model), "--instances", "1", "--threads",
                               str(threads), "--no-mdns"], env=env, stderr=subprocess.DEVNULL)]
    try:
        backend = LlamaCppBackend(model, n_threads=threads)
        client = SwarmClient(endpoint)
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="none",
                            max_retries=0, timeout=120)
        wait_ready(client)
        direct(backend, sampling)  # warm every path once
        asyncio.run(through_swarm(client, sampling))
        through_http(api, sampling)
        times: dict[str, list[float]] = {"direct": [], "mdp": [], "http": []}
        for r in range(args.rounds):
            d, d_text, d_tok = direct(backend, sampling)
            m, m_text, _ = asyncio.run(through_swarm(client, sampling))
            h, h_text, _ = through_http(api, sampling)
            if not d_text == m_text == h_text:
                raise SystemExit("the paths generated different text for the same seed")
            for name, t in (("direct", d), ("mdp", m), ("http", h)):
                times[name].append(t)
            print(f"round {r}: {d_tok} tokens  direct {d:.3f} s  mdp {m:.3f} s  http {h:.3f} s  "
                  f"ratios {m / d:.3f} {h / d:.3f}")
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"median over {args.rounds} rounds, {d_tok} tokens: " + ", ".join(
            f"{k} {v:.3f} s ({d_tok / v:.1f} tok/s)" for k, v in med.items()))
        for name in ("mdp", "http"):
            paired = statistics.median(s / d for s, d in zip(times[name], times["direct"]))
            print(f"overhead ratio {name}/direct: {med[name] / med['direct']:.3f} of medians, "
                  f"{paired:.3f} median of paired rounds (goal <= 1.05)")
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(10)


if __name__ == "__main__":
    main()
