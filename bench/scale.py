"""Scale: what the broker spends per job at 10 to 200 worker slots, with 1,000 jobs queued.

Per slot count, a fresh broker and synthetic worker processes (25 slots each); a few raw
DEALER clients submit every job at once (stream "winner": no progress events, so this
measures placing work, not relaying tokens), each job `--candidates` short synthetic
answers. The slots are paced so that together they could finish `--load` candidates a
second at every slot count (a candidate takes slots / load seconds, each pause drawn
within +-50 % so the slots do not finish in lockstep waves): an offered load the
broker can keep up with, so the latency is the broker's work per dispatch rather than the
length of its input queue (`--load 0`: as fast as the slots go, the broker saturated). Measured: the broker process's CPU seconds per job (its CPU time after the last
FINAL minus before the first REQUEST), its peak RSS, jobs per second, and the dispatch
latency: at a synthetic slot, from the end of one candidate (its FINAL goes out) to the
start of its next (the REQUEST came in), counted only while jobs were waiting (after every
job was sent, before the last candidate started). Goal: CPU per job flat from 10 to 200.

    .venv/bin/python bench/scale.py [--quick] [--jobs 1000] [--candidates 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import zmq
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Swarm  # noqa: E402
from bench.records import gaps  # noqa: E402
from bench.report import plot, table  # noqa: E402
from common import frames as F  # noqa: E402
from common.bodies import GenerateRequest, Sampling  # noqa: E402
from common.codec import pack  # noqa: E402
from common.messages import ClientReply, ClientRequest, decode_client, split_envelope  # noqa: E402

PER_PROCESS = 25
CLIENTS = 4


def layout(slots: int) -> list[int]:
    return [PER_PROCESS] * (slots // PER_PROCESS) + ([slots % PER_PROCESS] if slots % PER_PROCESS else [])


async def client(endpoint: str, jobs: int, candidates: int, tokens: int) -> tuple[float, int]:
    """One DEALER with `jobs` requests in flight; returns (when its last job was sent, FINALs)."""
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        body = pack(GenerateRequest(Sampling(prompt="scale", max_tokens=tokens),
                                    candidates=candidates, stream="winner", quorum=False,
                                    timeout_s=600).to_map())
        for _ in range(jobs):
            await sock.send_multipart(ClientRequest(F.SERVICE_GENERATE, (body,)).to_frames())
        sent_at, finals = time.monotonic(), 0
        while finals < jobs:
            frames = await asyncio.wait_for(sock.recv_multipart(), 120)
            msg = decode_client(split_envelope(frames)[1])
            if isinstance(msg, ClientReply) and msg.final:
                finals += 1
        return sent_at, finals
    finally:
        sock.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(slots: int, jobs: int, candidates: int, tokens: int, load: float,
            workdir: Path) -> dict:
    record = workdir / f"scale-{slots}.txt"
    delay_s = slots / load / tokens if load else 0.0
    # every piece its own PARTIAL (--stream-interval-s 0): the same messages a job at every
    # slot count, where the paced hand-over would join more of the shorter candidates' pieces
    args = ["--record", str(record), "--jitter", "0.5", "--stream-interval-s", "0"]
    with Swarm(layout(slots), tokens, delay_s, worker_args=args) as swarm:
        time.sleep(1.0)  # the workers settle (first heartbeats) before the clock starts
        before = swarm.broker_usage()
        start = time.monotonic()

        async def go():
            share = [jobs // CLIENTS + (i < jobs % CLIENTS) for i in range(CLIENTS)]
            return await asyncio.gather(*(client(swarm.endpoint, n, candidates, tokens)
                                          for n in share if n))
        results = asyncio.run(go())
        took = time.monotonic() - start
        after = swarm.broker_usage()
    all_sent = max(sent for sent, _ in results)
    pairs = gaps(record)
    last_start = max((s for _, s in pairs), default=0.0)
    waited = [(s - e) * 1000 for e, s in pairs if e >= all_sent and s <= last_start]
    return {"slots": slots, "processes": len(layout(slots)),
            "cpu_ms_per_job": (after["cpu_s"] - before["cpu_s"]) / jobs * 1000,
            "peak_mb": after["peak_mb"], "jobs_per_s": jobs / took,
            "p50_ms": percentile(waited, 0.5), "p99_ms": percentile(waited, 0.99),
            "samples": len(waited)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 200 slots, 300 jobs")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--slots", type=int, nargs="+", default=None)
    parser.add_argument("--load", type=float, default=200.0,
                        help="candidates a second all slots together can do (0: no pacing)")
    args = parser.parse_args()
    sizes = args.slots or ([10, 200] if args.quick else [10, 50, 100, 200])
    jobs = args.jobs or (300 if args.quick else 1000)
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        rows = [measure(n, jobs, args.candidates, args.tokens, args.load, Path(tmp)) for n in sizes]
    keys = ["slots", "processes", "cpu_ms_per_job", "peak_mb", "jobs_per_s", "p50_ms", "p99_ms",
            "samples"]
    pace = f"slots paced to {args.load:g} candidates/s" if args.load else "slots unpaced"
    table(f"Scale: {jobs} jobs of {args.candidates} candidates queued at once, {pace} "
          "(broker CPU per job; dispatch latency at the slot while jobs wait)",
          keys, [[r[k] for k in keys] for r in rows])
    base = rows[0]
    ratio = {k: rows[-1][k] / base[k] if base[k] else float("nan")
             for k in ("cpu_ms_per_job", "peak_mb", "p50_ms", "p99_ms")}
    table(f"Growth from {sizes[0]} to {sizes[-1]} slots (goal: CPU per job flat, ratio ~1)",
          list(ratio), [[v for v in ratio.values()]])
    plot("scale", "Scale: broker CPU per job and dispatch latency", sizes,
         {"CPU ms per job": [r["cpu_ms_per_job"] for r in rows],
          "dispatch p50 ms": [r["p50_ms"] for r in rows],
          "dispatch p99 ms": [r["p99_ms"] for r in rows]},
         xlabel="worker slots", ylabel="milliseconds")


if __name__ == "__main__":
    main()
