"""Early quorum: the time a majority vote saves by ending once its leader cannot be
overtaken (broker/quorum.py), against waiting for every candidate.

Each case is a real broker and one synthetic worker process per candidate (one slot each),
with spread-out per-token delays, so the candidates finish one after another; each worker
ends its candidate with its own answer (worker/synthetic.py --answer), so they agree or
split as the case says. The same request runs with `quorum` on and off, alternately in
one run; the table gives the ideal times (the slowest candidate's tokens x delay, and the
finish after which the vote is decided), the median job time each way, their ratio, the seconds saved (and
the broker's own estimate, vote.saved_s), and whether the winning answer was the same.

    .venv/bin/python bench/early_quorum.py [--quick] [--rounds 9] [--tokens 20]
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report  # noqa: E402
from bench.harness import Swarm, synthetic, wait_for_slots  # noqa: E402
from broker.voting import answer_key  # noqa: E402
from client.client import SwarmClient  # noqa: E402
from common.bodies import GenerateRequest, Sampling  # noqa: E402

PROMPT = "Pick a number."
SEED = 1234
JOB_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    delays_ms: tuple[float, ...]   # each candidate's worker: its pause before every token
    answers: tuple[str, ...]       # and the answer it ends with

    @property
    def majority(self) -> str:
        return max(set(self.answers), key=self.answers.count)

    def decided_s(self, tokens: int) -> float:
        """When an ideal early quorum ends the vote (every weight 1): the first finish at
        which the leader holds more than the runner-up plus every candidate still open."""
        finished = sorted(zip(self.delays_ms, self.answers))
        for done in range(1, len(finished) + 1):
            held = sorted((sum(1 for _, a in finished[:done] if a == answer)
                           for answer in set(self.answers)), reverse=True) + [0]
            if held[0] > held[1] + len(finished) - done:
                return finished[done - 1][0] * tokens / 1000
        return max(self.delays_ms) * tokens / 1000


AGREE5 = Case("5 agree", (5, 10, 20, 40, 80), ("42",) * 5)
SPLIT5 = Case("5 split 3:2", (5, 10, 20, 40, 80), ("42", "42", "7", "42", "7"))
AGREE9 = Case("9 agree, long tail", (5, 7, 10, 14, 20, 28, 40, 80, 160), ("42",) * 9)
SPLIT9 = Case("9 split 5:4, long tail", (5, 7, 10, 14, 20, 28, 40, 80, 160),
              ("42", "7", "42", "7", "42", "7", "42", "42", "7"))
QUICK_CASES = (AGREE5, SPLIT5)
FULL_CASES = (AGREE5, SPLIT5, AGREE9, SPLIT9)


@dataclass(frozen=True, slots=True)
class Run:
    job_s: float       # request sent to FINAL received, at the client
    winner: str        # the winner's answer, as majority compares it
    saved_s: float     # the broker's estimate of what early quorum saved
    cancelled: int     # candidates early quorum stopped


async def idle(client: SwarmClient, timeout_s: float = 30) -> None:
    """Until no slot is busy: a stopped candidate's slot frees within one token."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            status = await client.status(5.0)
            if not any(p.get("busy") for p in status["peers"]):
                return
        await asyncio.sleep(0.05)
    raise SystemExit("the benchmark's slots stayed busy after a job")


async def one_job(client: SwarmClient, case: Case, tokens: int, quorum: bool) -> Run:
    request = GenerateRequest(Sampling(prompt=PROMPT, max_tokens=tokens),
                              candidates=len(case.delays_ms), strategy="majority", seed=SEED,
                              timeout_s=JOB_TIMEOUT_S, quorum=quorum)
    await idle(client)
    start = time.perf_counter()
    result = await client.generate(request, JOB_TIMEOUT_S)
    took = time.perf_counter() - start
    vote = result.get("vote", {})
    return Run(took, answer_key(result["winner"]["text"]), vote.get("saved_s", 0.0),
               vote.get("cancelled", 0))


async def measure(endpoint: str, case: Case, tokens: int, rounds: int) -> dict[bool, list[Run]]:
    """`rounds` jobs each way, alternating which goes first; one warm-up each way."""
    client = SwarmClient(endpoint)
    runs: dict[bool, list[Run]] = {True: [], False: []}
    for quorum in (True, False):
        await one_job(client, case, tokens, quorum)
    for r in range(rounds):
        for quorum in ((True, False) if r % 2 == 0 else (False, True)):
            runs[quorum].append(await one_job(client, case, tokens, quorum))
    return runs


def run_case(case: Case, tokens: int, rounds: int) -> dict[bool, list[Run]]:
    with Swarm(slots=[]) as swarm:   # the broker; the workers differ, so they start here
        for i, (delay_ms, answer) in enumerate(zip(case.delays_ms, case.answers)):
            swarm.workers.append(synthetic(swarm.endpoint, f"q{i}-{delay_ms:g}ms", 1, tokens,
                                           delay_ms / 1000, ["--answer", answer]))
        asyncio.run(wait_for_slots(swarm.endpoint, len(case.delays_ms)))
        return asyncio.run(measure(swarm.endpoint, case, tokens, rounds))


def row(case: Case, tokens: int, runs: dict[bool, list[Run]]) -> list:
    on = statistics.median(r.job_s for r in runs[True])
    off = statistics.median(r.job_s for r in runs[False])
    winners = {r.winner for r in runs[True] + runs[False]}
    same = "yes" if winners == {f"number:{case.majority}"} else "NO: " + ", ".join(sorted(winners))
    return [case.name, max(case.delays_ms) * tokens / 1000, case.decided_s(tokens), off, on,
            on / off, off - on, statistics.median(r.saved_s for r in runs[True]),
            round(statistics.median(r.cancelled for r in runs[True])), same]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="The 5-candidate cases only, fewer rounds.")
@click.option("--rounds", type=click.IntRange(1, 1000), default=None,
              help="Jobs each way per case [9; --quick: 5].")
@click.option("--tokens", type=click.IntRange(2, 10_000), default=20, show_default=True,
              help="Tokens per candidate.")
def main(quick: bool, rounds: int | None, tokens: int) -> None:
    """Time saved by early quorum against waiting for every candidate."""
    rounds = rounds or (5 if quick else 9)
    cases = QUICK_CASES if quick else FULL_CASES
    rows = []
    for case in cases:
        click.echo(f"{case.name}: delays {', '.join(f'{d:g}' for d in case.delays_ms)} ms "
                   f"x {tokens} tokens, answers {' '.join(case.answers)}", err=True)
        rows.append(row(case, tokens, run_case(case, tokens, rounds)))
    report.table(f"Early quorum: median job time over {rounds} jobs each way, alternating",
                 ["case", "slowest s", "decided s", "off s", "on s", "on/off", "saved s", "broker est. s",
                  "stopped", "same winner"], rows)
    report.plot("early_quorum", "Early quorum: median job time", [r[0] for r in rows],
                {"quorum off (wait for all)": [r[3] for r in rows],
                 "quorum on": [r[4] for r in rows]},
                ylabel="seconds", kind="bar")


if __name__ == "__main__":
    main()
