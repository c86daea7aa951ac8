"""Fast offline sweep for the consensus benchmark: llama.cpp directly, no broker.

Per item it draws greedy once and N samples at one sampling setting, with the worker's
llama-cpp-python defaults (top_k 40, min_p 0.05), then prints single-sample, greedy and
majority@k accuracy over the extracted answers. Raw texts go to --out (JSON) so the vote
maths can be redone without the model. Used to pick the prompt style and the sampling
defaults recorded in docs/consensus.md.

    nice .venv/bin/python bench/sweep_offline.py --temperature 0.7 --samples 7 --out run.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import consensus_data as data  # noqa: E402
from bench.consensus_stats import offline_table  # noqa: E402
from worker.prompt import stops_for_chat, transcript  # noqa: E402


def spread_temps(temperature: float, spread: float, n: int) -> list[float]:
    if n == 1 or spread == 0:
        return [temperature] * n
    return [min(2.0, max(0.0, temperature - spread + 2 * spread * i / (n - 1))) for i in range(n)]


@click.command()
@click.option("--temperature", default=0.7)
@click.option("--top-p", default=1.0)
@click.option("--top-k", default=40)
@click.option("--min-p", default=0.05)
@click.option("--spread", default=0.0)
@click.option("--samples", default=7)
@click.option("--style", default="show", type=click.Choice(data.STYLES))
@click.option("--format", "fmt", default="chat", type=click.Choice(data.FORMATS))
@click.option("--items", default=0, help="first N items per category (0: all)")
@click.option("--max-tokens", default=16)
@click.option("--threads", default=1)
@click.option("--seed", default=1000)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def main(temperature, top_p, top_k, min_p, spread, samples, style, fmt, items, max_tokens, threads,
         seed, out):
    from worker.backend import LlamaCppBackend
    from worker.model_files import bundled_model
    llm = LlamaCppBackend(bundled_model(progress=False), n_ctx=1024, n_threads=threads).llm
    chosen = select(data.load(), items)
    temps = spread_temps(temperature, spread, samples)
    rows, start = [], time.monotonic()
    for n, item in enumerate(chosen):
        p, stop = text_and_stops(item, style, fmt)
        gen = lambda t, s: llm.create_completion(p, max_tokens=max_tokens, temperature=t, top_p=top_p,
                                                 top_k=top_k, min_p=min_p, seed=s,
                                                 stop=stop)["choices"][0]["text"]
        greedy = gen(0.0, seed)
        texts = [gen(t, seed + n * 100 + i) for i, t in enumerate(temps)]
        rows.append({"item": n, "category": item.category, "question": item.question,
                     "greedy": greedy, "samples": texts})
        if n % 20 == 0:
            click.echo(f"{n}/{len(chosen)} {time.monotonic() - start:.0f}s", err=True)
    settings = dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, spread=spread,
                    style=style, format=fmt, max_tokens=max_tokens)
    out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    click.echo(json.dumps(settings))
    click.echo(offline_table(chosen, rows))
    click.echo(f"wall {time.monotonic() - start:.0f}s")


def text_and_stops(item: data.Item, style: str, fmt: str) -> tuple[str, list[str]]:
    """What the worker's llama.cpp backend completes for this item, and where it stops."""
    if fmt == "qa":
        return data.prompt(item, style), list(data.STOP)
    return transcript(data.messages(item, style)), stops_for_chat(data.STOP)


def select(items: list[data.Item], per_category: int) -> list[data.Item]:
    if not per_category:
        return items
    seen: dict[str, int] = {}
    out = []
    for it in items:
        seen[it.category] = seen.get(it.category, 0) + 1
        if seen[it.category] <= per_category:
            out.append(it)
    return out


if __name__ == "__main__":
    main()
