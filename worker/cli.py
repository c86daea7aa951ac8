"""`swarm-worker`: serve model instances to a broker, one slot each."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
from collections.abc import Iterator

import click

from common import frames as F
from common import logs
from common.cli_types import BROKER_ENV, connect_endpoint, mdns_options, seconds, version_option
from common.config import config_option
from common.curve import WORKER
from common.curve_cli import (KeygenGroup, broker_key_option, client_keys, keygen_command,
                              secure_options)
from common.errors import ConfigError, SwarmError
from common.profile import MAX_CTX, MAX_HEARTBEAT_S, MAX_LIVENESS, default_name
from common.runner import run_until_signalled
from common.sdnotify import Notifier
from worker.launch import load, prepare
from worker.node import SHUTDOWN_GRACE_S, WorkerNode, node_profile
from worker.policy import AUTO, BACKENDS, Requested, parse_auto_int
from worker.handoff import INTERVAL_S as STREAM_INTERVAL_S, MAX_STREAM_INTERVAL_S
from worker.session import SessionConfig

log = logging.getLogger(__name__)


def _auto_int(lo: int, hi: int | None = None):
    """A click callback for "auto" or a whole number in [lo, hi]."""
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> int | str:
        try:
            return parse_auto_int(str(value), f"--{param.name.replace('_', '-')}", lo, hi)
        except ConfigError as e:
            raise click.BadParameter(str(e)) from e
    return parse


@click.group(cls=KeygenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@config_option("worker.toml", skip=("print_profile", "as_json"))
@click.option("--broker", default=None, envvar=BROKER_ENV, show_envvar=True,
              callback=connect_endpoint,
              help="Broker endpoint (tcp://HOST:PORT) [default: found on mDNS; with --no-mdns "
                   f"{F.DEFAULT_BROKER_CONNECT}].")
@mdns_options
@click.option("--name", default=None, help="Peer name shown in metrics [default: host name].")
@click.option("--model", "model_path", default=None, metavar="PATH",
              help="GGUF file, or MLX model directory [default: the bundled Gemma 3 270M].")
@click.option("--backend", type=click.Choice(BACKENDS), default=AUTO, show_default=True,
              help="auto: mlx for an MLX model on Apple Silicon, else llama.cpp.")
@click.option("--instances", default=AUTO, show_default=True, callback=_auto_int(1, 64),
              help="Model instances to load, each one slot (auto: as many as memory and cores allow).")
@click.option("--gpu-layers", default=AUTO, show_default=True, callback=_auto_int(-1),
              help="Layers to offload to the GPU (-1: all; auto: all that fit in VRAM).")
@click.option("--threads", default=AUTO, show_default=True, callback=_auto_int(1),
              help="CPU threads per instance (auto: the cores shared among the instances).")
@click.option("--seed-variation/--no-seed-variation", default=None,
              help="Let a slot take more than one candidate of a job, with distinct seeds "
                   "[default: on where one instance fits or memory is unified].")
@click.option("--n-ctx", default=AUTO, show_default=True, callback=_auto_int(0, MAX_CTX),
              help="Context length per instance in tokens (0: the model's trained context; "
                   "auto: that, capped by what fits in memory).")
@click.option("--prefix-cache/--no-prefix-cache", default=True, show_default=True,
              help="Let this worker's instances reuse each other's evaluated prompt prefixes "
                   "(KV cache); off: every generation evaluates its whole prompt.")
@click.option("--timeout-hint-s", type=seconds(), default=None,
              help="Per-candidate timeout this worker asks the broker for.")
@click.option("--stream-interval-s", type=seconds(lo=0.0, hi=MAX_STREAM_INTERVAL_S),
              default=STREAM_INTERVAL_S, show_default=True,
              help="Send streamed pieces at most this often, joined (0: each piece at once).")
@click.option("--heartbeat-s", type=seconds(hi=MAX_HEARTBEAT_S), default=F.DEFAULT_HEARTBEAT_S,
              show_default=True, help="Heartbeat interval this worker beats at and expects.")
@click.option("--liveness", type=click.IntRange(1, MAX_LIVENESS), default=F.DEFAULT_LIVENESS,
              show_default=True, help="Missed broker heartbeats before reconnecting.")
@click.option("--reconnect-s", type=seconds(hi=F.RECONNECT_MAX_S), default=F.RECONNECT_MIN_S,
              show_default=True, help="First reconnect back-off; doubles up to 32 s.")
@click.option("--shutdown-grace-s", type=seconds(), default=SHUTDOWN_GRACE_S, show_default=True,
              help="On SIGTERM, how long a slot may take to finish its candidate (keep it "
                   "under the unit's TimeoutStopSec); a second signal stops at once.")
@click.option("--print-profile", is_flag=True,
              help="Print the hardware profile and each decision with its reason, then exit.")
@click.option("--json", "as_json", is_flag=True, help="With --print-profile: one JSON object.")
@secure_options
@broker_key_option
@click.option("--log-format", type=click.Choice(logs.FORMATS), default=logs.TEXT,
              show_default=True, help="Log lines as text (key=value fields) or JSON objects.")
@click.option("-v", "--verbose", count=True, help="More logging (-v for debug).")
@version_option("swarm-worker")
@click.pass_context
def main(ctx, config_file, broker, swarm, no_mdns, name, model_path, backend, instances,
         gpu_layers, threads, seed_variation, n_ctx, prefix_cache, timeout_hint_s,
         stream_interval_s, heartbeat_s, liveness,
         reconnect_s, shutdown_grace_s, print_profile, as_json, secure, key_dir, broker_key,
         log_format, verbose):
    """Serve a local model to a Swarm broker."""
    if ctx.invoked_subcommand is not None:
        return
    logs.setup(verbose + (0 if print_profile else 1), fmt=log_format)
    config_file.announce()
    if as_json and not print_profile:
        raise click.UsageError("--json goes with --print-profile")
    curve = None if print_profile else client_keys(secure, key_dir, broker_key, WORKER,
                                                   "swarm-worker keygen")
    try:
        requested = Requested(backend, gpu_layers, instances, threads, seed_variation, n_ctx)
        with _killable():
            setup = prepare(model_path, requested, progress=not print_profile)
            if print_profile:
                click.echo(json.dumps(setup.to_map(), indent=2) if as_json
                           else "\n".join(setup.lines()))
                return
            backends = load(setup, prefix_cache=prefix_cache)
    except SwarmError as e:
        raise click.ClickException(str(e)) from e
    chosen = setup.plan
    profile = node_profile(name or default_name(), backends[0], len(backends),
                           chosen.seed_variation.value, socket.gethostname(), timeout_hint_s,
                           hardware=setup.hardware, gpu_layers=chosen.gpu_layers.value,
                           swarm=swarm)
    if broker is None and no_mdns:
        broker = F.DEFAULT_BROKER_CONNECT
    config = SessionConfig(broker, heartbeat_s=heartbeat_s, liveness=liveness,
                           reconnect_min_s=reconnect_s,
                           reconnect_max_s=max(reconnect_s, F.RECONNECT_MAX_S), curve=curve,
                           stream_interval_s=stream_interval_s)
    node = WorkerNode(config, profile, backends, mdns=not no_mdns, notifier=Notifier.from_env(),
                      shutdown_grace_s=shutdown_grace_s)
    run_until_signalled(node.run(), stop=node.shutdown)
    node.close()
    log.info("worker stopped")


main.add_command(keygen_command(WORKER))


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
