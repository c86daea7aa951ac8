"""How long the broker's loop can be kept from its sockets: votes and dispatch under load.

1. Vote stall. An asyncio loop ticks every millisecond while a similarity vote over long
   answers is counted, (a) on the loop over the whole texts, as the spine did, and (b) the
   broker's way: in its vote thread, over clipped texts. Printed: the longest the loop went
   without a tick in each case, side by side, and their ratio.
2. Dispatch. The pure `generate` service with 2 slots takes N jobs of 64 candidates (the
   review's case: 300 jobs took 11.2 s). Printed: time per submit at N and at 10 x N, and
   the status reply time with all of them queued; flat per-submit cost means the work
   follows what changed, not what is queued.

    .venv/bin/python bench/loop_stall.py [--answers 16] [--chars 50000] [--jobs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import string
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rapidfuzz import fuzz  # noqa: E402

from broker.generate import GenerateService  # noqa: E402
from broker.policy import Limits, TimeoutPolicy  # noqa: E402
from broker.metrics import MetricsBook  # noqa: E402
from broker.outbox import Outbox  # noqa: E402
from broker.registry import Registry  # noqa: E402
from broker.status import status_map  # noqa: E402
from broker.voting import Answer, normalise, vote  # noqa: E402
from common.bodies import GenerateRequest  # noqa: E402
from common.profile import WorkerProfile  # noqa: E402


def unbounded_medoid(answers: list[Answer]) -> int:
    """The spine's similarity vote: every pair over the whole normalised texts."""
    totals = {a.cand: 0.0 for a in answers}
    for i, a in enumerate(answers):
        for b in answers[i + 1:]:
            s = fuzz.ratio(normalise(a.text), normalise(b.text))
            totals[a.cand] += s
            totals[b.cand] += s
    return max(totals, key=totals.get)


async def longest_gap(work) -> tuple[float, float]:
    """Run `work` (a coroutine) while a 1 ms ticker records the longest gap; (gap, elapsed)."""
    gaps, stop = [0.0], asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps[0], last = max(gaps[0], now - last), now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    await work
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    return gaps[0], elapsed


async def vote_stall(n: int, chars: int) -> None:
    rng = random.Random(1)
    answers = [Answer(i, "".join(rng.choices(string.ascii_lowercase + " ", k=chars)), 1.0)
               for i in range(n)]

    async def on_loop() -> None:
        unbounded_medoid(answers)

    async def in_thread() -> None:
        with ThreadPoolExecutor(1) as pool:
            await asyncio.wrap_future(pool.submit(vote, "similarity", answers))

    old_gap, old_s = await longest_gap(on_loop())
    new_gap, new_s = await longest_gap(in_thread())
    print(f"vote over {n} answers of {chars} chars")
    print(f"  on the loop, whole texts : longest loop gap {old_gap * 1000:9.1f} ms (vote {old_s:.2f} s)")
    print(f"  vote thread, clipped     : longest loop gap {new_gap * 1000:9.1f} ms (vote {new_s:.3f} s)")
    print(f"  ratio of loop gaps (new/old): {new_gap / old_gap:.4f}")


def dispatch_cost(jobs: int) -> tuple[float, float]:
    registry = Registry(1.0, 3)
    for ident in (b"a", b"b"):
        registry.add(ident, b"generate", WorkerProfile(name=ident.decode(), seed_variation=True), False, 0.0)
    service = GenerateService(registry, MetricsBook(), Outbox(), TimeoutPolicy(),
                              limits=Limits(max_jobs=jobs, max_candidates=jobs * 64))
    request = GenerateRequest.from_map({"prompt": "2+2=", "candidates": 64})
    start = time.perf_counter()
    for i in range(jobs):
        service.submit(b"client", False, request, i * 1e-3)
    per_submit = (time.perf_counter() - start) / jobs
    start = time.perf_counter()
    status_map(registry, service.metrics, {})
    service.tick(1.0)
    return per_submit, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=16)
    parser.add_argument("--chars", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(vote_stall(args.answers, args.chars))
    small, small_tick = dispatch_cost(args.jobs)
    big, big_tick = dispatch_cost(args.jobs * 10)
    print("dispatch, 2 slots, jobs of 64 candidates")
    print(f"  {args.jobs:5d} jobs: {small * 1e6:8.1f} us per submit, status + tick {small_tick * 1000:.2f} ms")
    print(f"  {args.jobs * 10:5d} jobs: {big * 1e6:8.1f} us per submit, status + tick {big_tick * 1000:.2f} ms")
    print(f"  ratio of per-submit cost (10x jobs / 1x): {big / small:.2f}")


if __name__ == "__main__":
    main()
