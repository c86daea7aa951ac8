"""Long prompts: time to first token of an opencode-sized chat request through the swarm.

A real opencode request (bench/data/opencode_request.json: system prompt, 10 tool schemas)
goes to one swarm-worker process with 5 instances, as a job of k candidates, then as the
conversation's second turn (turn 1 + the answer + a new user message). Each is timed from
the request to the first token event the client receives (stream live), with the worker's
prefix cache on and off (two worker processes in turn), against one direct llama.cpp call
on the same prompt in this process from an empty KV. Every measurement starts its own
conversation (a session mark in the first tool's description: the tool schemas open the
prompt), so nothing is reused from the one before.

    .venv/bin/python bench/long_prompt.py [--quick] [--tools N] [--system-chars N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import BIN, QUIET, ROOT, free_port, stop, wait_for_slots  # noqa: E402
from bench.report import plot, table  # noqa: E402
from client.client import SwarmClient  # noqa: E402
from common.bodies import GenerateRequest, Sampling, Task  # noqa: E402
from worker.backend import LlamaCppBackend  # noqa: E402
from worker.launch import prepare  # noqa: E402
from worker.prompt import offer_tools, prompt_and_stops  # noqa: E402
from worker.requested import Requested  # noqa: E402

REQUEST = Path(__file__).parent / "data" / "opencode_request.json"
INSTANCES, N_CTX, MAX_TOKENS, SEED = 5, 16384, 8, 42
NEXT_QUESTION = "Good. Now list the Python files under worker/ and say what each one does."


def conversation(session: int, tools: int, system_chars: int) -> list[dict]:
    """Turn 1's messages and tools, marked with a session line near the front (in the first
    tool's description: the tools open the prompt) so no earlier conversation's state matches."""
    data = json.loads(REQUEST.read_text())
    messages = [dict(m) for m in data["messages"]]
    system = messages[0]["content"]
    messages[0]["content"] = f"Session {session}.\n" + (system[:system_chars] if system_chars else system)
    tools = [json.loads(json.dumps(t)) for t in data["tools"][:tools]]
    if tools:  # the tool schemas come first in the prompt (worker/prompt.offer_tools)
        tools[0]["function"]["description"] = f"(session {session}) " + \
            tools[0]["function"].get("description", "")
    return messages, tools


def sampling(messages: list[dict], tools: list[dict]) -> Sampling:
    return Sampling.from_map({"messages": messages, "tools": tools, "tool_choice": "auto",
                              "max_tokens": MAX_TOKENS, "temperature": 0.0})


def second_turn(messages: list[dict], answer: str) -> list[dict]:
    return [*messages, {"role": "assistant", "content": answer or "OK."},
            {"role": "user", "content": NEXT_QUESTION}]


def direct_ttft(backend: LlamaCppBackend, s: Sampling) -> float:
    backend.llm.reset()
    out = backend.generate(Task("direct", 0, SEED, s), lambda _: None, threading.Event())
    return out.timings["ttft_s"]


async def swarm_ttft(client: SwarmClient, s: Sampling, k: int) -> tuple[float, str]:
    """Seconds to the first token event the client saw; the winner's text."""
    first: list[float] = []
    start = time.perf_counter()

    def on_event(event: dict) -> None:
        if not first and event.get("event") == "token" and event.get("text"):
            first.append(time.perf_counter() - start)

    request = GenerateRequest(s, candidates=k, seed=SEED, timeout_s=3600)
    result = await client.generate(request, 3600, on_event=on_event)
    return (first[0] if first else time.perf_counter() - start), result["winner"]["text"]


def start_swarm(cache: bool, threads: int) -> tuple[str, list[subprocess.Popen]]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    broker = subprocess.Popen([str(BIN / "swarm-broker"), "--bind", endpoint, "--http", "off",
                               "--no-mdns", "--state-dir", "off",
                               "--peer-timeout", "long=3600"], cwd=ROOT, **QUIET)
    worker = subprocess.Popen([str(BIN / "swarm-worker"), "--broker", endpoint, "--no-mdns",
                               "--name", "long", "--instances", str(INSTANCES), "--threads",
                               str(threads), "--n-ctx", str(N_CTX),
                               "--prefix-cache" if cache else "--no-prefix-cache"],
                              cwd=ROOT, **QUIET)
    procs = [worker, broker]
    try:
        asyncio.run(wait_for_slots(endpoint, INSTANCES, timeout_s=600))
        warm = Sampling(prompt="Warm up.", max_tokens=2, temperature=0.0)  # every instance once
        asyncio.run(swarm_ttft(SwarmClient(endpoint), warm, INSTANCES))
    except BaseException:
        stop(procs)
        raise
    return endpoint, procs


def measure(args, threads: int, backend: LlamaCppBackend) -> dict[tuple, list[float]]:
    """{(mode, k, turn): [ttft_s per round]}, mode "on", "off" or "direct"."""
    times: dict[tuple, list[float]] = {}
    session = int(time.time())
    for cache in (True, False):
        mode = "on" if cache else "off"
        endpoint, procs = start_swarm(cache, threads)
        try:
            client = SwarmClient(endpoint)
            for r in range(args.rounds):
                for k in args.ks:
                    session += 1
                    messages, tools = conversation(session, args.tools, args.system_chars)
                    t1, answer = asyncio.run(swarm_ttft(client, sampling(messages, tools), k))
                    s2 = sampling(second_turn(messages, answer), tools)
                    t2, _ = asyncio.run(swarm_ttft(client, s2, k))
                    times.setdefault((mode, k, 1), []).append(t1)
                    times.setdefault((mode, k, 2), []).append(t2)
                    if cache:  # the direct call, once per conversation, on the same prompts
                        times.setdefault(("direct", 0, 1), []).append(
                            direct_ttft(backend, sampling(messages, tools)))
                        times.setdefault(("direct", 0, 2), []).append(direct_ttft(backend, s2))
                    print(f"round {r} {mode} k={k}: turn 1 {t1:.2f} s, turn 2 {t2:.2f} s",
                          flush=True)
        finally:
            stop(procs)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="k = 1, 3, one round, 2 tools and 2,000 characters of system prompt")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tools", type=int, default=10, help="tool schemas of the request to send")
    ap.add_argument("--system-chars", type=int, default=0,
                    help="cut the system prompt to this many characters (0: whole)")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5], help="candidates per job")
    args = ap.parse_args()
    if args.quick:
        args.ks, args.rounds, args.tools, args.system_chars = [1, 3], 1, 2, 2000
    setup = prepare(None, Requested(instances=INSTANCES, n_ctx=N_CTX), progress=False)
    threads = setup.plan.threads.value
    backend = LlamaCppBackend(setup.path, N_CTX, threads, prefix_cache=False)
    messages, tools = conversation(0, args.tools, args.system_chars)
    text = prompt_and_stops(offer_tools(sampling(messages, tools)))[0]
    n_prompt = len(backend.llm.tokenize(text.encode(), special=True))
    print(f"prompt: about {n_prompt} tokens, {args.tools} tools; {INSTANCES} instances x "
          f"{threads} threads; TTFT medians over {args.rounds} round(s)", flush=True)
    times = measure(args, threads, backend)
    med = {key: statistics.median(v) for key, v in times.items()}
    rows, series = [], {}
    for turn in (1, 2):
        d = med[("direct", 0, turn)]
        for k in args.ks:
            on, off = med[("on", k, turn)], med[("off", k, turn)]
            rows.append([turn, k, d, on, off, on / d, off / d, off / on])
            series.setdefault(f"turn {turn}, cache on", []).append(on / d)
            series.setdefault(f"turn {turn}, cache off", []).append(off / d)
    table(f"Long prompt TTFT (about {n_prompt} tokens): swarm vs one direct llama.cpp call",
          ["turn", "k", "direct s", "on s", "off s", "on/direct", "off/direct", "off/on"], rows)
    plot("long_prompt", f"TTFT / direct call, {n_prompt}-token prompt", args.ks, series,
         xlabel="candidates k", ylabel="TTFT / direct TTFT", kind="bar", goal=1.0)


if __name__ == "__main__":
    main()
