"""`swarm-worker`: serve model instances to a broker, one slot each."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import click

from common import frames as F
from common import logs
from common.cli_types import BROKER_ENV, connect_endpoint, mdns_options, seconds, version_option
from common.errors import SwarmError
from common.profile import MAX_HEARTBEAT_S, default_name
from common.runner import run_until_signalled
from worker.backend import LlamaCppBackend
from worker.model_files import resolve_model
from worker.node import WorkerNode, node_profile
from worker.session import SessionConfig

log = logging.getLogger(__name__)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--broker", default=None, envvar=BROKER_ENV, show_envvar=True,
              callback=connect_endpoint,
              help="Broker endpoint (tcp://HOST:PORT) [default: found on mDNS; with --no-mdns "
                   f"{F.DEFAULT_BROKER_CONNECT}].")
@mdns_options
@click.option("--name", default=None, help="Peer name shown in metrics [default: host name].")
@click.option("--model", "model_path", default=None, metavar="PATH",
              help="GGUF model file [default: the bundled Gemma 3 270M].")
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Model instances to load; each is one slot.")
@click.option("--seed-variation/--no-seed-variation", default=True, show_default=True,
              help="Allow a slot to take more than one candidate of a job (distinct seeds).")
@click.option("--n-ctx", type=click.IntRange(128), default=2048, show_default=True,
              help="Context length per instance.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads per instance [default: llama.cpp's choice].")
@click.option("--gpu-layers", type=int, default=0, show_default=True,
              help="Layers to offload to the GPU (-1: all).")
@click.option("--timeout-hint-s", type=seconds(), default=None,
              help="Per-candidate timeout this worker asks the broker for.")
@click.option("--heartbeat-s", type=seconds(hi=MAX_HEARTBEAT_S), default=F.DEFAULT_HEARTBEAT_S,
              show_default=True, help="Heartbeat interval this worker beats at and expects.")
@click.option("--liveness", type=click.IntRange(min=1), default=F.DEFAULT_LIVENESS,
              show_default=True, help="Missed broker heartbeats before reconnecting.")
@click.option("--reconnect-s", type=seconds(hi=F.RECONNECT_MAX_S), default=F.RECONNECT_MIN_S,
              show_default=True, help="First reconnect back-off; doubles up to 32 s.")
@click.option("-v", "--verbose", count=True, help="More logging (-v for debug).")
@version_option("swarm-worker")
def main(broker, swarm, no_mdns, name, model_path, instances, seed_variation, n_ctx, threads,
         gpu_layers, timeout_hint_s, heartbeat_s, liveness, reconnect_s, verbose):
    """Serve a local model to a Swarm broker."""
    logs.setup(verbose + 1)
    try:
        with _killable():
            path = resolve_model(model_path)
            log.info("loading %d instance(s) of %s", instances, path)
            backends = [LlamaCppBackend(path, n_ctx, threads, gpu_layers) for _ in range(instances)]
    except SwarmError as e:
        raise click.ClickException(str(e)) from e
    profile = node_profile(name or default_name(), backends[0], instances, seed_variation,
                           socket.gethostname(), timeout_hint_s, swarm=swarm)
    if broker is None and no_mdns:
        broker = F.DEFAULT_BROKER_CONNECT
    config = SessionConfig(broker, heartbeat_s=heartbeat_s, liveness=liveness,
                           reconnect_min_s=reconnect_s,
                           reconnect_max_s=max(reconnect_s, F.RECONNECT_MAX_S))
    run_until_signalled(WorkerNode(config, profile, backends, mdns=not no_mdns).run())
    log.info("worker stopped")


@contextlib.contextmanager
def _killable() -> Iterator[None]:
    """SIGINT and SIGTERM end the process at once while llama.cpp loads a model.

    The load runs in C, where Python's handlers cannot run (a Ctrl-C would wait for it, or be
    swallowed by the log callback); the default disposition lets the kernel end us instead.
    """
    saved = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
