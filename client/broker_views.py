"""What `swarm-ask` shows of the broker itself: its peers (once, or watched) and its history."""

from __future__ import annotations

import asyncio
import json
import sys

import click
from rich.console import Console

from client import peers_watch
from client.client import SwarmClient
from client.history_view import history_lines
from client.peers_view import peer_lines, peers_table
from client.render import plain


async def peers(client: SwarmClient, as_json: bool, timeout_s: float) -> None:
    status = await client.status(min(timeout_s, 10.0))
    if as_json:
        click.echo(json.dumps(plain(status["peers"]), indent=2))
    elif sys.stdout.isatty():
        peers_table(status["peers"], Console())
    else:
        click.echo("\n".join(peer_lines(status["peers"])))


async def history(client: SwarmClient, limit: int, as_json: bool, timeout_s: float) -> None:
    jobs = await client.history(limit, min(timeout_s, 10.0))
    if as_json:
        click.echo(json.dumps(plain(jobs), indent=2))
    else:
        click.echo("\n".join(history_lines(jobs)))

def watch(client: SwarmClient, as_json: bool, timeout_s: float, interval_s: float) -> None:
    """--peers --watch: one try an interval (the next interval is the retry), until Ctrl-C."""
    def fetch() -> list[dict]:
        return asyncio.run(client.status(min(timeout_s, 10.0)))["peers"]
    peers_watch.watch(fetch, peers_watch.Watch(client.broker, interval_s), sys.stdout, as_json)
