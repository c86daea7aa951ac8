"""Swarm overhead: N tokens from the model called directly vs through client -> broker -> worker,
over MDP (swarm's own client) and over the broker's OpenAI HTTP API (the `openai` package).

All paths use the same model file, prompt, seed and token count, and run alternately in
one process run (these machines are noisy), so the printed ratios compare like with like.
The broker and worker are real subprocesses on loopback (the broker keeps its state in a
temporary directory); every path runs llama.cpp with the worker's planned threads (or
--threads N). Goal: ratios <= 1.05. Prints a table and saves bench/results/overhead.png
(median time per path) and overhead_ratio.png (the ratios, with the goal line).

    .venv/bin/python bench/overhead.py [--quick] [--tokens 128] [--rounds 7] [--threads auto|N]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report  # noqa: E402
from bench.harness import BIN, free_port, stop  # noqa: E402
from client.client import SwarmClient  # noqa: E402
from common.bodies import GenerateRequest, Sampling, Task  # noqa: E402
from worker.backend import LlamaCppBackend  # noqa: E402
from worker.launch import prepare  # noqa: E402
from worker.policy import Requested  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea, there lived"
SEED = 1234
GOAL = 1.05
PATHS = ("direct", "mdp", "http")


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
        with contextlib.suppress(Exception):
            if any(p["live"] for p in asyncio.run(client.status(2))["peers"]):
                return
        time.sleep(0.2)
    raise SystemExit("the benchmark worker never registered")


@contextlib.contextmanager
def swarm(model: Path, threads: int) -> Iterator[tuple[str, str]]:
    """A broker (MDP and HTTP) and one real worker; yields (MDP endpoint, HTTP base URL)."""
    endpoint, http = f"tcp://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="swarm-overhead-") as state:
        procs = [subprocess.Popen([str(BIN / "swarm-broker"), "--bind", endpoint, "--no-mdns",
                                   "--http", http, "--state-dir", state,
                                   # a fixed candidate timeout: a busy machine's slow round
                                   # must not fail on one learned from the quick ones
                                   "--peer-timeout", "bench=600"],
                                  env=env, stderr=subprocess.DEVNULL),
                 subprocess.Popen([str(BIN / "swarm-worker"), "--broker", endpoint, "--name",
                                   "bench", "--model", str(model), "--instances", "1",
                                   "--threads", str(threads), "--no-mdns"],
                                  env=env, stderr=subprocess.DEVNULL)]
        try:
            yield endpoint, f"http://{http}/v1"
        finally:
            stop(procs)


def measure(backend: LlamaCppBackend, client: SwarmClient, api: openai.OpenAI,
            sampling: Sampling, rounds: int) -> tuple[dict[str, list[float]], int]:
    """Each path once to warm it, then `rounds` rounds of all three in turn."""
    direct(backend, sampling)
    asyncio.run(through_swarm(client, sampling))
    through_http(api, sampling)
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    tokens = 0
    for r in range(rounds):
        d, d_text, tokens = direct(backend, sampling)
        m, m_text, _ = asyncio.run(through_swarm(client, sampling))
        h, h_text, _ = through_http(api, sampling)
        if not d_text == m_text == h_text:
            raise SystemExit("the paths generated different text for the same seed")
        for name, t in zip(PATHS, (d, m, h)):
            times[name].append(t)
        print(f"round {r}: {tokens} tokens  direct {d:.3f} s  mdp {m:.3f} s  http {h:.3f} s  "
              f"ratios {m / d:.3f} {h / d:.3f}", flush=True)
    return times, tokens


def show(times: dict[str, list[float]], tokens: int, rounds: int) -> None:
    med = {name: statistics.median(times[name]) for name in PATHS}
    paired = {name: statistics.median(s / d for s, d in zip(times[name], times["direct"]))
              for name in PATHS}
    rows = [[name, med[name], tokens / med[name], med[name] / med["direct"], paired[name],
             "-" if name == "direct" else ("yes" if paired[name] <= GOAL else "NO")]
            for name in PATHS]
    report.table(f"Overhead on the real model: one candidate, {tokens} tokens, median of "
                 f"{rounds} alternating rounds", ["path", "median s", "tok/s", "of medians",
                                                  "paired ratio", f"<= {GOAL}"], rows)
    report.plot("overhead", f"Real model, {tokens} tokens: median time per path", list(PATHS),
                {"median s": [med[name] for name in PATHS]}, ylabel="seconds", kind="bar")
    report.plot("overhead_ratio", "Overhead: swarm path / direct call", ["mdp", "http"],
                {"ratio of medians": [med["mdp"] / med["direct"], med["http"] / med["direct"]],
                 "median of paired rounds": [paired["mdp"], paired["http"]]},
                ylabel="time / direct time", kind="bar", goal=GOAL)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Fewer rounds and tokens (what `make bench` runs).")
@click.option("--tokens", type=click.IntRange(1, 4096), default=None,
              help="Tokens per generation [128; --quick: 32].")
@click.option("--rounds", type=click.IntRange(1, 1000), default=None,
              help="Rounds of the three paths [7; --quick: 3].")
@click.option("--threads", default="auto", show_default=True,
              help="llama.cpp threads on every path (auto: the worker's plan).")
def main(quick: bool, tokens: int | None, rounds: int | None, threads: str) -> None:
    """One candidate through the swarm (MDP and HTTP) against the model called directly."""
    tokens = tokens or (32 if quick else 128)
    rounds = rounds or (3 if quick else 7)
    if threads != "auto" and not (threads.isdigit() and int(threads) >= 1):
        raise click.BadParameter("give auto or a whole number of at least 1", param_hint="--threads")
    setup = prepare(None, Requested(instances=1, threads=threads if threads == "auto"
                                    else int(threads)), progress=False)
    model, n_threads = setup.path, setup.plan.threads.value  # the same on every path
    sampling = Sampling(prompt=PROMPT, max_tokens=tokens, temperature=0.8)
    with swarm(model, n_threads) as (endpoint, base_url):
        backend = LlamaCppBackend(model, n_threads=n_threads)
        client = SwarmClient(endpoint)
        api = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)
        wait_ready(client)
        times, made = measure(backend, client, api, sampling, rounds)
    show(times, made, rounds)


if __name__ == "__main__":
    main()
