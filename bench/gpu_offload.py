"""GPU offload: what the worker's policy picks on this machine, and what it buys.

Prints the hardware profile and the plan (as `swarm-worker --print-profile` does), then
generates the same tokens from the same prompt and seed with the plan's GPU layers and with
none, alternately in one run, and prints tokens/s of each and their ratio. On a machine
without GPU offload the plan is CPU-only and the ratio is about 1.

    .venv/bin/python bench/gpu_offload.py [--model PATH] [--tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.bodies import Sampling, Task  # noqa: E402
from worker.backend import LlamaCppBackend  # noqa: E402
from worker.launch import prepare  # noqa: E402
from worker.policy import Requested  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea, there lived"
SEED = 1234


def tokens_per_s(backend: LlamaCppBackend, tokens: int) -> float:
    sampling = Sampling(prompt=PROMPT, max_tokens=tokens, temperature=0.0)
    start = time.perf_counter()
    out = backend.generate(Task("bench", 0, SEED, sampling), lambda _: None, threading.Event())
    return out.usage["completion_tokens"] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF file [default: the bundled model]")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    setup = prepare(args.model, Requested(instances=1), progress=False)
    print("\n".join(setup.lines()), flush=True)
    p = setup.plan
    split = list(p.tensor_split.value) if p.tensor_split.value else None
    gpu = LlamaCppBackend(setup.path, setup.n_ctx, p.threads.value, p.gpu_layers.value, split)
    cpu = LlamaCppBackend(setup.path, setup.n_ctx, p.threads.value, 0)
    for b in (gpu, cpu):
        tokens_per_s(b, 8)  # warm-up: first-call allocations, CUDA graph capture
    rates: dict[str, list[float]] = {"plan": [], "cpu": []}
    for _ in range(args.rounds):
        rates["plan"].append(tokens_per_s(gpu, args.tokens))
        rates["cpu"].append(tokens_per_s(cpu, args.tokens))
    plan_r, cpu_r = (statistics.median(rates[k]) for k in ("plan", "cpu"))
    print(f"\n{args.tokens} tokens x {args.rounds} rounds, median tokens/s:")
    print(f"  {f'plan ({p.gpu_layers.value} GPU layers)':26}{plan_r:8.1f}")
    print(f"  {'CPU only (0 GPU layers)':26}{cpu_r:8.1f}")
    print(f"  ratio plan / CPU: {plan_r / cpu_r:.2f}")


if __name__ == "__main__":
    main()
