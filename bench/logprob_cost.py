"""The cost of reporting each candidate's mean token log-probability (Task `logprobs`).

The same model instance, prompt, seed and token count, with and without `logprobs`, run
alternately in one process (these machines are noisy), so the ratio compares like with like.
Each run reports tokens/s over its wall time and the process's CPU seconds per token (all
llama.cpp threads included; CPU time moves less than wall time on a machine others share),
and the log-softmax over one vocabulary row, the work `logprobs` adds per token, is timed alone.

    .venv/bin/python bench/logprob_cost.py [--tokens 64] [--rounds 5] [--threads auto|N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.bodies import Sampling, Task  # noqa: E402
from worker.backend import LlamaCppBackend  # noqa: E402
from worker.launch import prepare  # noqa: E402
from worker.logprobs import token_logprob  # noqa: E402
from worker.policy import Requested  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea, there lived"
SEED = 1234


def one_run(backend: LlamaCppBackend, tokens: int, logprobs: bool) -> tuple[float, float]:
    """(tokens/s over the wall time, CPU ms per token) of one greedy answer of `tokens` tokens."""
    sampling = Sampling(prompt=PROMPT, max_tokens=tokens, temperature=0, logprobs=logprobs)
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = backend.generate(Task("bench", 0, SEED, sampling), lambda _: None, threading.Event())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    made = outcome.usage.get("completion_tokens", 0)
    if outcome.error is not None or (outcome.logprob is None) == logprobs or not made:
        raise SystemExit(f"the run went wrong: {outcome.error or 'logprob not as asked'}")
    return made / wall, 1000 * cpu / made


def softmax_ms(n_vocab: int, repeats: int = 200) -> float:
    """Milliseconds of one token's log-softmax over a vocabulary row (the median of repeats)."""
    logits = np.random.default_rng(0).normal(0, 5, n_vocab).astype(np.float32)
    buffer = np.empty_like(logits)
    times = []
    for token in range(repeats):
        start = time.perf_counter()
        token_logprob(logits, token, buffer)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default="auto", help="llama.cpp threads [auto: the plan's]")
    args = ap.parse_args()
    threads = "auto" if args.threads == "auto" else int(args.threads)
    setup = prepare(None, Requested(instances=1, threads=threads), progress=False)
    backend = LlamaCppBackend(setup.path, n_threads=setup.plan.threads.value)
    one_run(backend, 8, False)  # warm-up
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for logprobs in (False, True):
            runs[logprobs].append(one_run(backend, args.tokens, logprobs))
    print(f"{args.tokens} tokens, {args.rounds} rounds, {setup.plan.threads.value} threads, "
          f"model {setup.path.name} (vocabulary {backend.llm.n_vocab()})")
    medians = {}
    for logprobs, label in ((False, "without"), (True, "with")):
        speed = statistics.median(r[0] for r in runs[logprobs])
        cpu = statistics.median(r[1] for r in runs[logprobs])
        medians[logprobs] = speed, cpu
        print(f"  {label:>7} logprobs: {speed:6.1f} tokens/s, {cpu:6.2f} CPU ms/token (medians; "
              f"tokens/s runs {[round(r[0], 1) for r in runs[logprobs]]})")
    print(f"  ratio with/without: tokens/s {medians[True][0] / medians[False][0]:.3f}, "
          f"CPU per token {medians[True][1] / medians[False][1]:.3f}")
    print(f"  one token's log-softmax alone: {softmax_ms(backend.llm.n_vocab()):.2f} ms")

if __name__ == "__main__":
    main()
