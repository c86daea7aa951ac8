"""`swarm-ask`: ask the swarm a question, watch the candidates, get the winner."""

from __future__ import annotations

import asyncio
import json
import sys

import click
from rich.console import Console

from client.client import SwarmClient
from client.local import local_swarm
from client.render import Progress, json_result, peers_table, summary
from common import frames as F
from common import logs
from common.endpoints import click_connect
from common.bodies import STRATEGIES, GenerateRequest, Sampling
from common.errors import SwarmError
from worker.model_files import resolve_model


def _question(question: str | None) -> str:
    if question is None or question == "-":
        question = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    question = question.strip()
    if not question:
        raise click.UsageError("no question given: pass it as an argument or on stdin")
    return question


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("question", required=False)
@click.option("--broker", default=F.DEFAULT_BROKER_CONNECT, show_default=True,
              callback=click_connect, help="Broker endpoint.")
@click.option("--candidates", "-n", type=click.IntRange(1, 64), default=3, show_default=True)
@click.option("--strategy", type=click.Choice(STRATEGIES), default="similarity", show_default=True)
@click.option("--max-tokens", type=click.IntRange(1, 32768), default=128, show_default=True)
@click.option("--temperature", type=click.FloatRange(0.0, 2.0), default=0.7, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None,
              help="Base seed; candidate i uses seed + i.")
@click.option("--timeout-s", type=click.FloatRange(min=0.01), default=60.0, show_default=True,
              help="Give up on the job after this long.")
@click.option("--raw", is_flag=True, help="Send the text as a raw completion prompt (no chat).")
@click.option("--stop", multiple=True, help="Stop sequence (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--peers", is_flag=True, help="List the workers with their metrics, then exit.")
@click.option("--local", is_flag=True, help="Run an embedded broker + worker on loopback.")
@click.option("--model", "model_path", default=None, metavar="PATH",
              help="With --local: GGUF model [default: the bundled Gemma 3 270M].")
@click.option("--instances", type=click.IntRange(1, 16), default=1, show_default=True,
              help="With --local: model instances (slots).")
@click.option("-v", "--verbose", count=True)
def main(question, broker, candidates, strategy, max_tokens, temperature, seed, timeout_s, raw,
         stop, as_json, peers, local, model_path, instances, verbose):
    """Ask the swarm QUESTION (or stdin) and print the winning answer."""
    logs.setup(verbose, quiet=not verbose)
    try:
        if peers:
            asyncio.run(_peers(broker, as_json, timeout_s))
            return
        text = _question(question)
        sampling = Sampling(prompt=text if raw else None,
                            messages=None if raw else ({"role": "user", "content": text},),
                            max_tokens=max_tokens, temperature=temperature, stop=tuple(stop))
        request = GenerateRequest(sampling, candidates, strategy, seed, timeout_s,
                                  stream="winner" if as_json else "progress")
        model = resolve_model(model_path) if local else None
        result = asyncio.run(_ask(broker, request, timeout_s, local, model, instances, as_json))
    except SwarmError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(json_result(result), indent=2))
    else:
        click.echo(summary(result), err=True)
        click.echo(result["winner"]["text"].strip())


async def _ask(broker, request, timeout_s, local, model, instances, as_json) -> dict:
    if local:
        async with local_swarm(model, instances, timeout_s=timeout_s) as endpoint:
            return await _ask(endpoint, request, timeout_s, False, None, 1, as_json)
    client = SwarmClient(broker)
    if as_json:
        return await client.generate(request, timeout_s)
    with Progress() as progress:
        return await client.generate(request, timeout_s, progress.on_event)


async def _peers(broker: str, as_json: bool, timeout_s: float) -> None:
    status = await SwarmClient(broker).status(min(timeout_s, 10.0))
    if as_json:
        click.echo(json.dumps(status["peers"], indent=2))
    else:
        peers_table(status["peers"], Console())
