"""`swarm-broker`: run the MDP/0.2 broker."""

from __future__ import annotations

import ipaddress
import logging
import math
from pathlib import Path

import click

from broker.adaptive import DEFAULT_CAP_S, DEFAULT_FLOOR_S
from broker.history import DEFAULT_HISTORY_SIZE, MAX_HISTORY_SIZE
from broker.http_api import DEFAULT_HTTP, KEEPALIVE_S, HttpApi
from broker.peers import parse_peers
from broker.policy import CANCEL_GRACE_S, MAX_JOB_CANDIDATES, MAX_JOBS
from broker.server import LAST_FLUSH_S, SHUTDOWN_GRACE_S, Broker, BrokerConfig
from broker.store import FILE_NAME as STATE_FILE
from broker.zap import ServerKeys
from common import frames as F
from common import logs, node_id
from common.cli_types import bind_endpoint, http_address, mdns_options, seconds, version_option
from common.config import config_option
from common.curve import ALLOWED_DIR_NAME, BROKER, AllowedKeys, default_key_dir, load_keypair
from common.curve_cli import KeygenGroup, keygen_command, secure_options
from common.endpoints import bind_host
from common.errors import ConfigError
from common.discovery import broker_mdns
from common.profile import MAX_HEARTBEAT_S, MAX_LIVENESS
from common.runner import run_until_signalled
from common.sdnotify import Notifier

log = logging.getLogger(__name__)


def _peer_timeouts(ctx, param, values: tuple[str, ...]) -> dict[str, float]:
    """click callback for --peer-timeout: NAME=SECONDS pairs, as a dict."""
    out = {}
    for value in values:
        name, sep, secs = value.partition("=")
        try:
            out[name] = float(secs)
        except ValueError:
            sep = ""
        if not sep or not name or not math.isfinite(out.get(name, 0)) or out.get(name, 0) <= 0:
            raise click.BadParameter(f"'{value}' is not NAME=SECONDS with SECONDS > 0",
                                     param_hint="--peer-timeout")
    return out


@click.group(cls=KeygenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@config_option("broker.toml", tables={"peers": parse_peers})
@click.option("--bind", default=F.DEFAULT_BROKER_BIND, show_default=True, callback=bind_endpoint,
              help="ZeroMQ endpoint for clients and workers (tcp://HOST:PORT, HOST * for all).")
@click.option("--heartbeat-s", type=seconds(hi=MAX_HEARTBEAT_S), default=F.DEFAULT_HEARTBEAT_S,
              show_default=True, help="Heartbeat interval.")
@click.option("--liveness", type=click.IntRange(1, MAX_LIVENESS), default=F.DEFAULT_LIVENESS,
              show_default=True, help="Missed heartbeats before a worker is dead.")
@click.option("--timeout-s", type=seconds(), default=F.DEFAULT_TIMEOUT_S, show_default=True,
              help="Job deadline, and a peer's timeout until its own is learned.")
@click.option("--timeout-floor-s", type=seconds(), default=DEFAULT_FLOOR_S, show_default=True,
              help="A peer's learned timeout is never shorter than this.")
@click.option("--timeout-cap-s", type=seconds(), default=DEFAULT_CAP_S, show_default=True,
              help="A peer's learned timeout is never longer than this.")
@click.option("--first-token-timeout-s", type=seconds(), default=None,
              help="Fail a candidate whose first token takes longer than this.")
@click.option("--peer-timeout", multiple=True, metavar="NAME=SECONDS", callback=_peer_timeouts,
              help="Per-peer timeout override (repeatable).")
@click.option("--cancel-grace-s", type=seconds(), default=CANCEL_GRACE_S, show_default=True,
              help="How long a slot told to stop may take to end; then it is disconnected.")
@click.option("--shutdown-grace-s", type=seconds(), default=SHUTDOWN_GRACE_S, show_default=True,
              help="On SIGTERM, how long running jobs may take to finish (keep it under the "
                   "unit's TimeoutStopSec); a second signal stops at once.")
@click.option("--max-jobs", type=click.IntRange(1, 1_000_000), default=MAX_JOBS, show_default=True,
              help="Jobs in flight before new ones are refused as busy.")
@click.option("--max-candidates", type=click.IntRange(1, 10_000_000), default=MAX_JOB_CANDIDATES,
              show_default=True, help="Candidates of all jobs in flight before new jobs are refused.")
@click.option("--http", "http", default=DEFAULT_HTTP, show_default=True, callback=http_address,
              metavar="HOST:PORT|off", help="Serve the OpenAI-compatible API here (off: none).")
@click.option("--api-key", envvar="SWARM_API_KEY", default=None, metavar="KEY",
              help="Require 'Authorization: Bearer KEY' on the HTTP API [env SWARM_API_KEY].")
@click.option("--web/--no-web", "page", default=True, show_default=True,
              help="Serve the live web page (peers, jobs, the vote as it happens) at / on the "
                   "HTTP server; --api-key protects it too.")
@click.option("--sse-keepalive-s", type=seconds(), default=KEEPALIVE_S, show_default=True,
              help="While a streamed answer is voted on, an SSE comment this often.")
@click.option("--state-dir", default=None, metavar="DIR|off",
              help="Keep peer metrics and recent jobs in DIR/broker.sqlite3 (off: in memory "
                   "only) [default: $SWARM_STATE_DIR, else systemd's $STATE_DIRECTORY, else "
                   "the platform's state directory].")
@click.option("--history-size", type=click.IntRange(1, MAX_HISTORY_SIZE),
              default=DEFAULT_HISTORY_SIZE, show_default=True,
              help="Recent jobs kept for swarm-ask --history; older ones are pruned.")
@mdns_options
@secure_options
@click.option("--allowed-keys", "allowed_keys", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help=f"With --secure: the public keys (*.key) of the workers and clients let in "
                   f"[default: {ALLOWED_DIR_NAME}/ in the key directory].")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default=logs.TEXT,
              show_default=True, help="Log lines as text (key=value fields) or JSON objects.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@version_option("swarm-broker")
@click.pass_context
def main(ctx, config_file, bind, heartbeat_s, liveness, timeout_s, timeout_floor_s,
         timeout_cap_s, first_token_timeout_s, peer_timeout, cancel_grace_s, shutdown_grace_s,
         max_jobs, max_candidates, http, api_key, page, sse_keepalive_s, state_dir, history_size,
         swarm, no_mdns, secure, key_dir, allowed_keys, log_format, verbose):
    """Hand each question to several worker slots at once and vote a winner."""
    if ctx.invoked_subcommand is not None:
        return
    logs.setup(verbose + 1, fmt=log_format)
    config_file.announce()
    if timeout_floor_s > timeout_cap_s:
        raise click.BadParameter(f"the floor {timeout_floor_s:g} s is above the cap "
                                 f"{timeout_cap_s:g} s", param_hint="--timeout-floor-s")
    curve = _server_keys(secure, key_dir, allowed_keys)
    if curve is None and _exposed(bind):
        log.warning("the broker listens on %s without --secure: anyone who can reach it can "
                    "serve answers or ask questions (see 'Securing a swarm' in the README)", bind)
    config = BrokerConfig(bind, heartbeat_s, liveness, timeout_s, first_token_timeout_s,
                          peer_timeout, max_jobs, max_candidates, swarm,
                          timeout_floor_s=timeout_floor_s, timeout_cap_s=timeout_cap_s,
                          curve=curve, cancel_grace_s=cancel_grace_s,
                          state_file=_state_file(state_dir), history_size=history_size,
                          peers=config_file.table("peers", {}), shutdown_grace_s=shutdown_grace_s)
    broker = Broker(config, notifier=Notifier.from_env())
    try:
        broker.bind()
    except Exception as e:  # zmq raises ZMQError for a busy port or a bad endpoint
        raise click.ClickException(f"cannot bind {bind}: {e}") from e
    api = None
    if http is not None:
        api = HttpApi(broker, http[0], http[1], api_key, sse_keepalive_s, page)
        if not api_key and not _loopback(http[0]):
            log.warning("the HTTP API listens on %s without an API key: anyone who can reach "
                        "it can use the swarm (set --api-key or SWARM_API_KEY)", http[0])
    run_until_signalled(_serve(broker, not no_mdns, api), stop=broker.shutdown)
    broker.ctx.destroy(linger=int(LAST_FLUSH_S * 1000))  # the last FINALs and goodbyes go out
    log.info("broker stopped")


main.add_command(keygen_command(BROKER))


def _state_file(state_dir: str | None) -> Path | None:
    if state_dir is not None and state_dir.strip().lower() == "off":
        return None
    if state_dir is not None and not state_dir.strip():
        raise click.BadParameter("give a directory, or off", param_hint="--state-dir")
    return (Path(state_dir) if state_dir is not None else node_id.state_dir()) / STATE_FILE


def _server_keys(secure: bool, key_dir: Path | None, allowed_dir: Path | None) -> ServerKeys | None:
    if not secure:
        if allowed_dir is not None:
            raise click.UsageError("--allowed-keys goes with --secure")
        return None
    directory = key_dir or default_key_dir()
    allowed = AllowedKeys(allowed_dir or directory / ALLOWED_DIR_NAME)
    try:
        keys = ServerKeys(load_keypair(directory, BROKER, "swarm-broker keygen"), allowed)
        count = allowed.check()
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    log.info("secure: broker key %s; %d allowed key(s) in %s", keys.pair.public, count,
             allowed.directory)
    if not count:
        log.warning("no allowed keys in %s yet: every worker and client is refused until their "
                    ".key files are copied there", allowed.directory)
    return keys


def _exposed(bind: str) -> bool:
    """Whether the broker's endpoint can be reached from beyond this host."""
    host = bind_host(bind)
    return host is not None and not _loopback(host)


def _loopback(host: str) -> bool:
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _serve(broker: Broker, mdns: bool, api: HttpApi | None) -> None:
    """Run the bound broker, advertised on mDNS and browsing its swarm's workers."""
    if api is not None:
        try:
            await api.start()
        except OSError as e:
            raise click.ClickException(f"cannot serve HTTP on {api.host}:{api.port}: "
                                       f"{e.strerror or e}") from e
    try:
        curve = broker.config.curve
        key = curve.pair.public if curve is not None else ""
        broker.lifecycle.mdns_settled = False  # READY waits for the advert (or its failure)
        async with broker_mdns(broker.config.swarm, broker.endpoint, mdns, key,
                               on_settled=broker.advertised_now) as workers:
            if workers is not None:
                broker.advertised = workers.adverts
            await broker.run()
    finally:
        if api is not None:
            await api.stop()
