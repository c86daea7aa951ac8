"""Accuracy benchmark: does the swarm's vote beat one sample, and greedy decoding?

Runs the bundled model through a real swarm-broker and swarm-workers on loopback over the
question set in bench/questions.jsonl (few-shot prompts, bench/consensus_data.py):
- pool:   per item one job of k_max candidates, quorum off, logprobs on; the strategies at
          each k are voted offline on its first k candidates with broker.voting.vote, and
          single-sample accuracy is the mean over all its candidates;
- greedy: per item one job, one candidate at temperature 0;
- auto:   per item one real job of k candidates, strategy auto, early quorum on, as a user
          gets it (accuracy, wall time per item, candidates cancelled);
- judge:  real jobs with strategy judge (k = 5; every k with --judge-all).
Each gain is in points with a 95% paired-bootstrap interval (items resampled).

    nice .venv/bin/python bench/eval_consensus.py --quick
    nice .venv/bin/python bench/eval_consensus.py --json results.json
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import consensus_data as data  # noqa: E402
from bench.consensus_stats import offline_vote, table_rows, format_table  # noqa: E402
from bench.consensus_swarm import Setting, local_swarm, request, run_job  # noqa: E402
from common.errors import SwarmError  # noqa: E402

OFFLINE = ("majority", "confidence", "auto", "similarity")


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise click.BadParameter("give k as numbers separated by commas, like 1,3,5,7") from None
    if not ks or ks[0] < 1 or ks[-1] > 64:
        raise click.BadParameter("each k must be between 1 and 64")
    return ks


def choose(items: list[data.Item], count: int) -> list[data.Item]:
    """`count` items spread evenly over the categories (all of them for 0)."""
    if not count or count >= len(items):
        return items
    by_cat = {c: [it for it in items if it.category == c] for c in data.CATEGORIES}
    out: list[data.Item] = []
    i = 0
    while len(out) < count:
        for c in data.CATEGORIES:
            if i < len(by_cat[c]) and len(out) < count:
                out.append(by_cat[c][i])
        i += 1
    return out


def progress(label: str, n: int, total: int, start: float) -> None:
    click.echo(f"\r{label}: {n}/{total} items, {time.monotonic() - start:.0f} s", err=True,
               nl=n == total)


def run_pass(client, items, label, make_request) -> list[dict]:
    """One job per item; per item its FINAL and wall time."""
    out, start = [], time.monotonic()
    for n, item in enumerate(items, 1):
        res = run_job(client, make_request(n - 1, item))
        out.append({"final": res.final, "wall_s": res.wall_s})
        progress(label, n, len(items), start)
    return out


def real_summary(items, runs) -> dict:
    right = [float(data.is_right(it, r["final"]["winner"]["text"])) for it, r in zip(items, runs)]
    walls = [r["wall_s"] for r in runs]
    cancelled = [r["final"].get("vote", {}).get("cancelled", 0) or 0 for r in runs]
    return {"right": right, "wall_mean_s": statistics.fmean(walls),
            "wall_p50_s": statistics.median(walls), "cancelled_mean": statistics.fmean(cancelled)}


@click.command()
@click.option("--quick", is_flag=True, help="About 42 items, k = 1,5: a few minutes.")
@click.option("--items", "count", type=click.IntRange(0), default=0, help="Items to run, spread over the categories [all].")
@click.option("--k", "ks", default="1,3,5,7", show_default=True, help="Candidate counts to report.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.7, show_default=True)
@click.option("--top-p", type=click.FloatRange(0, 1), default=1.0, show_default=True)
@click.option("--spread", type=click.FloatRange(0, 2), default=0.0, show_default=True,
              help="temperature_spread of each job.")
@click.option("--greedy-cand/--no-greedy-cand", default=False, show_default=True,
              help="Candidate 0 of each job decodes at temperature 0.")
@click.option("--shuffle/--no-shuffle", default=False, show_default=True,
              help="shuffle_examples: each candidate but the first sees the examples in its own order.")
@click.option("--style", type=click.Choice(data.STYLES), default="show", show_default=True,
              help="Few-shot examples: show (answers show their working), long, category, mixed, zero.")
@click.option("--format", "fmt", type=click.Choice(data.FORMATS), default="chat", show_default=True,
              help="The examples as chat turns, or as one raw Q/A prompt.")
@click.option("--max-tokens", type=click.IntRange(1, 256), default=24, show_default=True)
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**30), default=1000, show_default=True)
@click.option("--judge-all", is_flag=True, help="Judge jobs at every k, not only k = 5.")
@click.option("--no-real", is_flag=True, help="Skip the real auto and judge jobs (pool and greedy only).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the settings, table and raw per-item results here.")
def main(quick, count, ks, temperature, top_p, spread, greedy_cand, shuffle, style, fmt, max_tokens, workers,
         threads, seed, judge_all, no_real, json_path):
    """Consensus accuracy of the bundled model through a real swarm on loopback."""
    ks = parse_ks("1,5" if quick and ks == "1,3,5,7" else ks)
    items = choose(data.load(), count or (42 if quick else 0))
    setting = Setting(temperature, top_p, spread, greedy_cand, shuffle, max_tokens, style, fmt)
    try:
        with tempfile.TemporaryDirectory() as tmp, local_swarm(workers, threads, Path(tmp)) as client:
            report = evaluate(client, items, setting, ks, seed, judge_all, not no_real)
    except SwarmError as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_table(report["rows"]))
    if json_path:
        json_path.write_text(json.dumps(report, indent=1))


def evaluate(client, items, setting: Setting, ks, seed: int, judge_all: bool, real: bool) -> dict:
    def job(k, strategy, quorum=True, temperature=None):
        return lambda n, it: request(it, setting, k, strategy, seed + 100 * n, quorum, temperature)

    start = time.monotonic()
    pool = run_pass(client, items, f"pool k={ks[-1]}", job(ks[-1], "majority", quorum=False))
    greedy = run_pass(client, items, "greedy", job(1, "first", temperature=0.0))
    offline = {(s, k): [float(data.is_right(it, offline_vote(s, p["final"], k, it.question)))
                        for it, p in zip(items, pool)] for s in OFFLINE for k in ks}
    real_runs: dict[tuple[str, int], dict] = {}
    for k in ks if real else ():
        real_runs["auto", k] = real_summary(items, run_pass(client, items, f"auto k={k}", job(k, "auto")))
        if k == 5 or judge_all:
            real_runs["judge", k] = real_summary(items, run_pass(client, items, f"judge k={k}", job(k, "judge")))
    single = [statistics.fmean(data.is_right(it, c.get("text") or "") for c in p["final"]["candidates"])
              for it, p in zip(items, pool)]
    greedy_right = [float(data.is_right(it, g["final"]["winner"]["text"])) for it, g in zip(items, greedy)]
    rows = table_rows(ks, single, greedy_right, offline, real_runs)
    return {"settings": _settings(setting, items, ks, seed),
            "wall_s": time.monotonic() - start, "rows": rows,
            "items": [{"category": it.category, "question": it.question, "golds": list(it.golds),
                       "pool": p["final"]["candidates"], "greedy": g["final"]["winner"]["text"]}
                      for it, p, g in zip(items, pool, greedy)],
            "real": {f"{s}@{k}": v for (s, k), v in real_runs.items()}}


def _settings(setting: Setting, items, ks, seed) -> dict:
    fields = ("temperature", "top_p", "spread", "greedy_cand", "shuffle", "max_tokens", "style", "format")
    return {**{f: getattr(setting, f) for f in fields}, "items": len(items), "ks": list(ks), "seed": seed}


if __name__ == "__main__":
    main()
