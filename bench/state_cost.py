"""What keeping state costs the broker: the same jobs through a broker with its SQLite state
on (`--state-dir DIR`: peer metrics snapshots, one history row a job) and off (`off`).

Both brokers are real processes on loopback, each with its own synthetic worker process
(`python -m worker.synthetic`: no model, so the broker's own work is all there is to see),
and they take turns, round by round, in one run (these machines are noisy). Each round
sends JOBS jobs of CANDIDATES candidates, CONCURRENCY at a time. Printed: each side's
median jobs/s and the ratio on/off (1.00: free), and the history rows kept.

    .venv/bin/python bench/state_cost.py [--jobs 200] [--candidates 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.client import SwarmClient  # noqa: E402
from common.bodies import GenerateRequest, Sampling  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def swarm(state: str, slots: int):
    """A broker (state dir or off) and a synthetic worker; yields the broker's endpoint."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    broker = subprocess.Popen([BIN / "swarm-broker", "--bind", endpoint, "--http", "off",
                               "--no-mdns", "--state-dir", state, "--max-jobs", "10000"],
                              **quiet)
    worker = subprocess.Popen([sys.executable, "-m", "worker.synthetic", "--broker", endpoint,
                               "--name", "synth", "--slots", str(slots), "--tokens", "16",
                               "--token-delay-s", "0"], **quiet)
    try:
        asyncio.run(_wait_for_slots(endpoint, slots))
        yield endpoint
    finally:
        for proc in (worker, broker):
            proc.send_signal(signal.SIGINT)
        for proc in (worker, broker):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _wait_for_slots(endpoint: str, slots: int) -> None:
    client = SwarmClient(endpoint, retries=0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            status = await client.status(2.0)
            if status["peers"]:  # the slots of one worker register together
                await asyncio.sleep(0.5)
                return
        await asyncio.sleep(0.2)
    raise SystemExit(f"no worker registered at {endpoint}")


async def one_round(endpoint: str, jobs: int, candidates: int, concurrency: int) -> float:
    """Jobs per second for `jobs` jobs, `concurrency` in flight."""
    client = SwarmClient(endpoint, retries=0)
    sampling = Sampling(prompt="Say something.", max_tokens=16, temperature=0.7)
    request = GenerateRequest(sampling, candidates=candidates, timeout_s=60, stream="winner")
    todo = iter(range(jobs))

    async def runner() -> None:
        for _ in todo:
            result = await client.generate(request, 60)
            if not result.get("winner"):
                raise SystemExit(f"a job failed: {result}")
    start = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    return jobs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state_dir, \
            swarm("off", args.candidates) as off, swarm(state_dir, args.candidates) as on:
        rates = {"off": [], "on": []}
        for r in range(args.rounds):
            for name, endpoint in (("off", off), ("on", on))[:: 1 if r % 2 == 0 else -1]:
                rates[name].append(asyncio.run(
                    one_round(endpoint, args.jobs, args.candidates, args.concurrency)))
        time.sleep(3)  # a peer snapshot is due every 2 s
        db = Path(state_dir) / "broker.sqlite3"
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    off_m, on_m = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(f"{args.rounds} rounds x {args.jobs} jobs x {args.candidates} candidates, "
          f"{args.concurrency} in flight, synthetic worker (16 tokens, no delay)")
    print(f"  state off: {off_m:8.1f} jobs/s (median; all: "
          f"{', '.join(f'{x:.0f}' for x in rates['off'])})")
    print(f"  state on:  {on_m:8.1f} jobs/s (median; all: "
          f"{', '.join(f'{x:.0f}' for x in rates['on'])})")
    print(f"  ratio on/off: {on_m / off_m:.3f}   history rows kept: {rows}")


if __name__ == "__main__":
    main()
