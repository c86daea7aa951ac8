"""`swarm-ask`: ask the swarm a question, watch the candidates, get the winner."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator

import click
from click.core import ParameterSource

from client.chat import Messages, chat
from client.client import CONNECT_TIMEOUT_S, RETRIES, SwarmClient
from client.history_view import JobCount
from client.local import local_swarm_thread
from client import broker_views as views
from client.render import Progress, Streamer, json_result, plain, summary
from client.vote_table import WIDTH, vote_table
from common import frames as F
from broker.history import DEFAULT_LIMIT
from common import logs
from common.bodies import (DEFAULT_STRATEGY, MAX_CANDIDATES, MAX_TOKENS, STRATEGIES,
                           GenerateRequest, Sampling)
from common.cli_types import (BROKER_ENV, FiniteFloat, connect_endpoint, mdns_options, seconds,
                              version_option)
from common.curve import CLIENT
from common.curve_cli import broker_key_option, client_keys, make_keys, secure_options
from common.discovery import find_broker
from common.errors import SwarmError
from worker.launch import prepare
from worker.policy import Requested

EXIT_INTERRUPTED = 130
# the per-job knobs default to the contract's own defaults (common/bodies.py), spelled once
_JOB = {f.name: f.default for f in dataclasses.fields(GenerateRequest)}
_SAMPLING = {f.name: f.default for f in dataclasses.fields(Sampling)}
MDNS_LOOK_S = 3.0  # how long swarm-ask looks for a broker on mDNS


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """What every question of one run shares: where to ask, how, and how to show it."""

    client: SwarmClient
    template: GenerateRequest
    raw: bool
    as_json: bool
    chatting: bool = False
    verbose: bool = False


def _question(words: tuple[str, ...], as_json: bool) -> str | None:
    """The question from the words (joined), or stdin; None means: chat on this terminal."""
    question = " ".join(words).strip()
    if not words or words == ("-",):
        if sys.stdin is not None and sys.stdin.isatty():
            if words or as_json:
                raise click.UsageError("no question given: pass it as an argument or on stdin")
            return None
        question = sys.stdin.read().strip() if sys.stdin is not None else ""
    if not question:
        raise click.UsageError("no question given: pass it as an argument or on stdin")
    return question


def _check_usage(ctx: click.Context, peers: bool, local: bool, history: int | None) -> None:
    given = {name for name in ("model_path", "instances")
             if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    if given and not local:
        raise click.UsageError("--model and --instances only apply with --local")
    if local and ctx.params["secure"]:
        raise click.UsageError("--secure is for a broker elsewhere; --local stays on loopback")
    if peers and local:
        raise click.UsageError("--peers asks a running broker; it cannot be used with --local")
    if peers and ctx.params["question"]:
        raise click.UsageError("--peers takes no question")
    if history is not None and (local or peers or ctx.params["question"]):
        raise click.UsageError("--history asks a running broker: it takes no question, "
                               "--local or --peers")
    if ctx.params["watch"] and not peers:
        raise click.UsageError("--watch goes with --peers (swarm-ask --peers --watch)")
    if ctx.get_parameter_source("interval_s") is not ParameterSource.DEFAULT \
            and not ctx.params["watch"]:
        raise click.UsageError("--interval-s goes with --watch")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("question", nargs=-1)
@click.option("--broker", default=None, envvar=BROKER_ENV, show_envvar=True,
              callback=connect_endpoint,
              help="Broker endpoint (tcp://HOST:PORT) [default: found on mDNS, else "
                   f"{F.DEFAULT_BROKER_CONNECT}].")
@mdns_options
@click.option("--candidates", "-k", type=click.IntRange(1, MAX_CANDIDATES), default=3,
              show_default=True, help="Answers to gather; candidate i uses seed + i.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=DEFAULT_STRATEGY, show_default=True,
              help="How the winner is chosen (auto: majority over the extracted answers where "
                   "they are short, else similarity; first: the fastest, streamed as it is "
                   "written).")
@click.option("--max-tokens", "-n", type=click.IntRange(1, MAX_TOKENS), default=128,
              show_default=True, help="Most tokens each candidate may write.")
@click.option("--temperature", type=FiniteFloat(0.0, 2.0), default=0.7, show_default=True,
              help="Sampling temperature (0: greedy).")
@click.option("--top-p", type=FiniteFloat(0.0, 1.0), default=_SAMPLING["top_p"],
              show_default=True, help="Nucleus sampling: draw from the smallest set of tokens "
                                      "whose probability reaches this (1: all).")
@click.option("--temperature-spread", "spread", type=FiniteFloat(0.0, 2.0),
              default=_JOB["spread"], show_default=True,
              help="Spread the candidates' temperatures evenly over temperature +- this "
                   "(clamped to 0..2).")
@click.option("--greedy/--no-greedy", default=_JOB["greedy"], show_default=True,
              help="Candidate 0 decodes greedily (temperature 0) among the sampled ones.")
@click.option("--quorum/--no-quorum", default=_JOB["quorum"], show_default=True,
              help="Majority-style votes end early once the leader cannot be overtaken "
                   "(--no-quorum: every candidate finishes).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None,
              help="Base seed; candidate i uses seed + i.")
@click.option("--timeout-s", type=seconds(), default=60.0, show_default=True,
              help="Give up on the job after this long.")
@click.option("--connect-timeout-s", type=seconds(hi=3600.0), default=CONNECT_TIMEOUT_S,
              show_default=True, help="Give up reaching the broker after this long.")
@click.option("--retries", type=click.IntRange(0, 100), default=RETRIES, show_default=True,
              help="Send a request again this many times when the broker is lost or does not "
                   "answer (0: never); an error the broker sends is not retried.")
@click.option("--raw", is_flag=True, help="Send the text as a raw completion prompt (no chat).")
@click.option("--stop", multiple=True, help="Stop sequence (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--peers", is_flag=True, help="List the workers with their metrics, then exit.")
@click.option("--history", type=JobCount(), is_flag=False,
              flag_value=DEFAULT_LIMIT, default=None, metavar="[N]",
              help=f"List the broker's N most recent jobs (default {DEFAULT_LIMIT}), then exit.")
@click.option("--watch", is_flag=True,
              help="With --peers: show the list again every --interval-s until Ctrl-C.")
@click.option("--interval-s", type=seconds(lo=0.1, hi=3600.0), default=2.0, show_default=True,
              help="With --watch: how often the list is asked for.")
@click.option("--local", is_flag=True, help="Run an embedded broker + worker on loopback.")
@click.option("--model", "model_path", default=None, metavar="PATH",
              help="With --local: GGUF model [default: the bundled Gemma 3 270M].")
@click.option("--instances", type=click.IntRange(1, 16), default=1, show_default=True,
              help="With --local: model instances (slots).")
@secure_options
@broker_key_option
@click.option("--keygen", is_flag=True,
              help="Make this client's CURVE key pair (client.key, client.key_secret) for "
                   "--secure brokers, print its public key, and exit.")
@click.option("-v", "--verbose", count=True, help="Log what the client does (-vv for debug).")
@version_option("swarm-ask")
@click.pass_context
def main(ctx, question, broker, swarm, no_mdns, candidates, strategy, max_tokens, temperature,
         top_p, spread, greedy, quorum, seed, timeout_s, connect_timeout_s, retries, raw, stop,
         as_json, peers, history, watch, interval_s, local, model_path, instances, secure,
         key_dir, broker_key, keygen, verbose):
    """Ask the swarm QUESTION (the words are joined; none: stdin, or a chat on a terminal)."""
    if keygen:
        if question:
            raise click.UsageError("--keygen takes no question")
        make_keys(CLIENT, key_dir, False, as_json)
        return
    _check_usage(ctx, peers, local, history)
    service = peers or history is not None  # asks the broker itself, not the swarm
    text = None if service else _question(question, as_json)
    if text is None and raw and not service:
        raise click.UsageError("--raw needs a question")
    logs.setup(verbose, quiet=not verbose)
    sampling = Sampling(prompt="", max_tokens=max_tokens, temperature=temperature,
                        stop=tuple(stop), top_p=top_p)
    template = GenerateRequest(sampling, candidates, strategy, seed, timeout_s,
                               stream="winner" if as_json else "progress", spread=spread,
                               greedy=greedy, quorum=quorum)
    curve = client_keys(secure, key_dir, broker_key, CLIENT, "swarm-ask --keygen")
    fallback = None
    if broker is None and not local:
        broker, fallback = _find_broker(swarm, no_mdns, curve.server if curve else None)
    try:
        with _endpoint(broker, local, model_path, instances, timeout_s) as endpoint:
            client = SwarmClient(endpoint, connect_timeout_s=connect_timeout_s, curve=curve,
                                 retries=0 if watch else retries, on_retry=_retrying)
            session = Session(client, template, raw, as_json, text is None, verbose > 0)
            if watch:
                views.watch(client, as_json, timeout_s, interval_s)
            elif peers:
                asyncio.run(views.peers(client, as_json, timeout_s))
            elif history is not None:
                asyncio.run(views.history(client, history, as_json, timeout_s))
            elif text is None:
                chat(lambda messages: _answer(session, messages))
            else:
                _answer(session, text)
    except SwarmError as e:
        raise click.ClickException(f"{e} ({fallback})" if fallback else str(e)) from e
    except KeyboardInterrupt:
        click.echo("\nswarm-ask: cancelled", err=True)
        ctx.exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def _endpoint(broker: str, local: bool, model_path: str | None, instances: int,
              timeout_s: float) -> Iterator[str]:
    if not local:
        _say(f"connecting to {broker}...")
        yield broker
        return
    setup = prepare(model_path, Requested(instances=instances))
    _say("starting a local swarm...")
    with local_swarm_thread(setup, timeout_s=timeout_s) as endpoint:
        yield endpoint


def _find_broker(swarm: str, no_mdns: bool, pin: str | None) -> tuple[str, str | None]:
    """The broker of `swarm` found on mDNS (only one whose key is `pin`, if given), else the
    default endpoint with a note to show only if that fails too."""
    if no_mdns:
        return F.DEFAULT_BROKER_CONNECT, None
    _say(f"looking for a swarm broker on mDNS (swarm {swarm})...")
    found = asyncio.run(find_broker(swarm, MDNS_LOOK_S, pin))
    if found is not None:
        return found, None
    which = f"swarm '{swarm}' with the pinned key" if pin else f"swarm '{swarm}'"
    return F.DEFAULT_BROKER_CONNECT, (f"no broker of {which} answered on mDNS within "
                                      f"{MDNS_LOOK_S:g} s, so {F.DEFAULT_BROKER_CONNECT} was tried")


def _retrying(note: str) -> None:
    """A retry is said on stderr, in pipes too: the person or script waits longer for it."""
    click.echo(f"swarm-ask: {note}", err=True)


def _say(line: str) -> None:
    """A word for a person waiting at a terminal; nothing in pipes and logs."""
    if sys.stderr is not None and sys.stderr.isatty():
        click.echo(line, err=True)


def _answer(session: Session, question: str | Messages) -> str:
    """Ask one question (text, or a chat's whole conversation); print and return the winner."""
    sampling = session.template.sampling
    if isinstance(question, str) and session.raw:
        sampling = dataclasses.replace(sampling, prompt=question, messages=None)
    else:
        turns = ({"role": "user", "content": question},) if isinstance(question, str) else question
        sampling = dataclasses.replace(sampling, prompt=None, messages=turns)
    request = dataclasses.replace(session.template, sampling=sampling)
    if session.as_json:
        result = asyncio.run(session.client.generate(request, request.timeout_s))
        click.echo(json.dumps(plain(json_result(result)), indent=2))
        return result["winner"]["text"]
    result = asyncio.run(_watched(session, request))
    if not session.chatting or session.verbose:
        for line in vote_table(result, _stderr_width()):
            click.echo(line, err=True)
        click.echo(summary(result), err=True)
    return result["winner"]["text"]


def _stderr_width() -> int:
    """The terminal's width where stderr is one (the table fits it), else the table's own."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, OSError, ValueError):  # a pipe, a file, or no stderr at all
        return WIDTH


async def _watched(session: Session, request: GenerateRequest) -> dict:
    """generate with the progress view on stderr and the winner's text on stdout."""
    streaming = request.strategy == "first"
    streamer = Streamer(sys.stdout, live=streaming)
    one_terminal = sys.stdout.isatty() and sys.stderr.isatty()
    with Progress(quiet=streaming and one_terminal, transient=session.chatting) as progress:
        def on_event(event: dict) -> None:
            progress.on_event(event)
            streamer.on_event(event)
        try:
            result = await session.client.generate(request, request.timeout_s, on_event)
        finally:
            if streamer.shown:
                sys.stdout.flush()
    note = streamer.finish(result)
    if note:
        click.echo(f"note: {note}", err=True)
    return result
