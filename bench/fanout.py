"""Fan-out: does a job of k candidates take as long as its slowest candidate, and no more?

k = 1 ... 64 candidates of one job on k synthetic slots (8 per worker process at most), each
candidate `--tokens` pieces with a fixed pause before each. Per k, several rounds: the job's
time at the client (submit to FINAL) over its slowest candidate's own generation time (what
the synthetic worker measured and recorded). Goal: at most 1.05 at every k.

    .venv/bin/python bench/fanout.py [--quick] [--rounds 5] [--tokens 20] [--delay-s 0.025]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Swarm  # noqa: E402
from bench.records import candidate_times  # noqa: E402
from bench.report import plot, table  # noqa: E402
from client.client import SwarmClient  # noqa: E402
from common.bodies import GenerateRequest, Sampling  # noqa: E402

KS = (1, 2, 4, 8, 16, 64)
PER_PROCESS = 8
GOAL = 1.05


def layout(k: int) -> list[int]:
    """k slots over processes of at most PER_PROCESS slots."""
    return [PER_PROCESS] * (k // PER_PROCESS) + ([k % PER_PROCESS] if k % PER_PROCESS else [])


async def one_job(client: SwarmClient, k: int, record: Path,
                  stream: str = "progress") -> tuple[float, float]:
    """(time at the client, slowest candidate's own time) of one k-candidate job."""
    request = GenerateRequest(Sampling(prompt="fan out", max_tokens=1000), candidates=k,
                              quorum=False, timeout_s=120, stream=stream)
    start = time.perf_counter()
    final = await client.generate(request, 120)
    took = time.perf_counter() - start
    ok = [c for c in final["candidates"] if c.get("ok")]
    if len(ok) != k:
        raise SystemExit(f"k={k}: only {len(ok)} of {k} candidates finished")
    for _ in range(50):  # the record lines are written before each FINAL goes out
        own = candidate_times(record).get(final["job"], [])
        if len(own) >= k:
            return took, max(own)
        await asyncio.sleep(0.02)
    raise SystemExit(f"k={k}: the workers recorded {len(own)} of {k} candidate times")


def measure(k: int, rounds: int, tokens: int, delay_s: float, workdir: Path,
            stream: str = "progress") -> list[float]:
    record = workdir / f"fanout-{k}.txt"
    with Swarm(layout(k), tokens, delay_s, worker_args=["--record", str(record)]) as swarm:
        async def go() -> list[float]:
            client = SwarmClient(swarm.endpoint, retries=0)
            await one_job(client, k, record, stream)  # a warm-up round, not counted
            ratios = []
            for _ in range(rounds):
                took, slowest = await one_job(client, k, record, stream)
                ratios.append(took / slowest)
            return ratios
        return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (make bench)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay-s", type=float, default=0.025)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 8)
    rows, medians, worst = [], [], []
    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
        for k in KS:
            ratios = measure(k, rounds, args.tokens, args.delay_s, Path(tmp))
            med, top = statistics.median(ratios), max(ratios)
            medians.append(med)
            worst.append(top)
            rows.append([k, len(layout(k)), rounds, med, top, "yes" if med <= GOAL else "NO"])
    table(f"Fan-out: job time at the client / slowest candidate's own time "
          f"({args.tokens} tokens x {args.delay_s * 1000:g} ms)",
          ["k", "processes", "rounds", "median ratio", "worst ratio", "median <= 1.05"], rows)
    plot("fanout", "Fan-out: job time / slowest candidate", list(KS),
         {"median": medians, "worst": worst}, xlabel="candidates (k slots)",
         ylabel="job time / slowest candidate", goal=GOAL, logx=True)


if __name__ == "__main__":
    main()
