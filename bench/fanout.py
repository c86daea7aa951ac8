"""Fan-out: does a job of k candidates take as long as its slowest candidate, and no more?

k = 1 ... 64 candidates of one job on k synthetic slots (8 per worker process at most), each
candidate `--tokens` pieces with a fixed pause before each. Per k, several rounds: the job's
time at the client (submit to FINAL) over its slowest candidate's own generation time (what
the synthetic worker measured and recorded). Goal: at most 1.05 at every k. Each k runs
in both stream modes, taking turns: "progress" relays every token to the client as it
comes, "winner" only the FINAL (so the difference is the relay's share).

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
STREAMS = ("progress", "winner")  # every token relayed to the client, or only the FINAL


def layout(k: int, per: int = PER_PROCESS) -> list[int]:
    """k slots over processes of at most `per` slots."""
    return [per] * (k // per) + ([k % per] if k % per else [])


async def one_job(client: SwarmClient, k: int, record: Path,
                  stream: str = "progress") -> dict[str, float]:
    """One k-candidate job: its time at the client over its slowest candidate's own time,
    and where the rest went: submit to the last candidate's start, the last candidate's
    end to the FINAL at the client (milliseconds)."""
    request = GenerateRequest(Sampling(prompt="fan out", max_tokens=1000), candidates=k,
                              quorum=False, timeout_s=120, stream=stream)
    start = time.monotonic()
    final = await client.generate(request, 120)
    done = time.monotonic()
    ok = [c for c in final["candidates"] if c.get("ok")]
    if len(ok) != k:
        raise SystemExit(f"k={k}: only {len(ok)} of {k} candidates finished")
    for _ in range(50):  # the record lines are written before each FINAL goes out
        own = candidate_times(record).get(final["job"], [])
        if len(own) >= k:
            return {"ratio": (done - start) / max(t for t, _ in own),
                    "start_ms": (max(s for _, s in own) - start) * 1000,
                    "tail_ms": (done - max(s + t for t, s in own)) * 1000}
        await asyncio.sleep(0.02)
    raise SystemExit(f"k={k}: the workers recorded {len(own)} of {k} candidate times")


def measure(k: int, rounds: int, tokens: int, delay_s: float, workdir: Path,
            per: int = PER_PROCESS) -> dict[str, list[dict[str, float]]]:
    """Per stream mode, `rounds` jobs on one swarm of k slots, the modes taking turns."""
    record = workdir / f"fanout-{k}.txt"
    with Swarm(layout(k, per), tokens, delay_s, worker_args=["--record", str(record)]) as swarm:
        async def go() -> dict[str, list[dict[str, float]]]:
            client = SwarmClient(swarm.endpoint, retries=0)
            await one_job(client, k, record)  # a warm-up round, not counted
            out: dict[str, list[dict[str, float]]] = {mode: [] for mode in STREAMS}
            for _ in range(rounds):
                for mode in STREAMS:
                    out[mode].append(await one_job(client, k, record, mode))
            return out
        return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (make bench)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay-s", type=float, default=0.025)
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS), help="candidates per job")
    parser.add_argument("--per-process", type=int, default=PER_PROCESS,
                        help="synthetic slots a worker process")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 8)
    rows, series = [], {f"{mode} median": [] for mode in STREAMS}
    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
        for k in args.ks:
            runs = measure(k, rounds, args.tokens, args.delay_s, Path(tmp), args.per_process)
            for mode in STREAMS:
                med = statistics.median(r["ratio"] for r in runs[mode])
                series[f"{mode} median"].append(med)
                rows.append([k, mode, rounds, med, max(r["ratio"] for r in runs[mode]),
                             statistics.median(r["start_ms"] for r in runs[mode]),
                             statistics.median(r["tail_ms"] for r in runs[mode]),
                             "yes" if med <= GOAL else "NO"])
    table(f"Fan-out: job time at the client / slowest candidate's own time "
          f"({args.tokens} tokens x {args.delay_s * 1000:g} ms; last start: submit to the "
          "last candidate's start; tail: its end to the FINAL at the client)",
          ["k", "stream", "rounds", "median ratio", "worst ratio", "last start ms", "tail ms",
           "median <= 1.05"], rows)
    plot("fanout", "Fan-out: job time / slowest candidate", args.ks, series,
         xlabel="candidates (k slots)", ylabel="job time / slowest candidate", goal=GOAL,
         logx=True)


if __name__ == "__main__":
    main()
