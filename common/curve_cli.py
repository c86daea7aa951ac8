"""CurveZMQ on the command line, alike on the three programs: `keygen`, `--secure`,
`--key-dir` and `--broker-key`. Every failure is one sentence (click's error), never a
traceback."""

from __future__ import annotations

import json
from pathlib import Path

import click

from common.curve import (ALLOWED_DIR_NAME, BROKER, CLIENT, KEY_DIR_ENV, PUBLIC_SUFFIX, WORKER,
                          ClientKeys, KeyPair, default_key_dir, load_keypair, pinned_key,
                          write_keypair)
from common.errors import ConfigError

_NEXT = {
    BROKER: "copy {public} to every worker and client (as {broker} in their key directory, "
            "or pass --broker-key {key}); put their .key files in {allowed}",
    WORKER: "copy {public} into the broker's allowed keys (its {allowed_name}/ directory), "
            "under a name of its own",
    CLIENT: "copy {public} into the broker's allowed keys (its {allowed_name}/ directory), "
            "under a name of its own",
}


def key_dir_option(f):
    """--key-dir DIR: where this program keeps its CURVE keys (and a broker its allowed/)."""
    return click.option("--key-dir", "key_dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, envvar=KEY_DIR_ENV, show_envvar=True, metavar="DIR",
                        help="Where the CURVE keys are [default: curve/ in Swarm's state "
                             "directory].")(f)


def secure_options(f):
    """--secure and --key-dir, on every program."""
    f = key_dir_option(f)
    return click.option("--secure", is_flag=True,
                        help="Talk CurveZMQ: encrypted, and only between known keys "
                             "(see 'Securing a swarm' in the README).")(f)


def broker_key_option(f):
    """--broker-key KEY|FILE: the broker a worker or client pins (with --secure)."""
    return click.option("--broker-key", default=None, metavar="KEY|FILE",
                        help="With --secure: the broker's public key to pin, as Z85 or its "
                             f"{BROKER}{PUBLIC_SUFFIX} file [default: {BROKER}{PUBLIC_SUFFIX} in "
                             "the key directory].")(f)


def keygen_command(role: str) -> click.Command:
    """`PROGRAM keygen`: make ROLE's key pair."""
    @click.command("keygen", context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--key-dir", "--dir", "key_dir", type=click.Path(file_okay=False, path_type=Path),
                  default=None, envvar=KEY_DIR_ENV, show_envvar=True, metavar="DIR",
                  help="Where to write the keys [default: curve/ in Swarm's state directory].")
    @click.option("--force", is_flag=True, help="Replace an existing key pair.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def keygen(key_dir: Path | None, force: bool, as_json: bool) -> None:
        make_keys(role, key_dir, force, as_json)
    keygen.short_help = f"Make this {role}'s CURVE key pair, for --secure."
    keygen.help = (f"Make this {role}'s CURVE key pair for --secure: {role}{PUBLIC_SUFFIX} "
                   f"(public) and {role}.key_secret (mode 0600), then print the public key.")
    return keygen


def make_keys(role: str, key_dir: Path | None, force: bool, as_json: bool) -> None:
    directory = key_dir or default_key_dir()
    allowed = directory / ALLOWED_DIR_NAME
    try:
        pair = KeyPair.generate()
        public, secret = write_keypair(directory, role, pair, force)
        if role == BROKER:
            allowed.mkdir(mode=0o700, exist_ok=True)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:
        raise click.ClickException(f"cannot write keys in {directory}: {e.strerror or e}") from e
    if as_json:
        out = {"role": role, "public_key": pair.public, "public_file": str(public),
               "secret_file": str(secret)}
        click.echo(json.dumps({**out, "allowed_dir": str(allowed)} if role == BROKER else out))
        return
    click.echo(f"public key: {pair.public}")
    click.echo(f"public key file: {public}")
    click.echo(f"secret key file: {secret} (mode 0600: never copy it anywhere)")
    click.echo("next: " + _NEXT[role].format(public=public, broker=f"{BROKER}{PUBLIC_SUFFIX}",
                                             key=pair.public, allowed=allowed,
                                             allowed_name=ALLOWED_DIR_NAME))


def client_keys(secure: bool, key_dir: Path | None, broker_key: str | None, role: str,
                keygen: str) -> ClientKeys | None:
    """A worker's or client's CURVE keys under --secure (None without it): its own pair,
    made by the command `keygen`, and the pinned broker key."""
    if not secure:
        if broker_key:
            raise click.UsageError("--broker-key goes with --secure")
        return None
    directory = key_dir or default_key_dir()
    try:
        return ClientKeys(load_keypair(directory, role, keygen), pinned_key(broker_key, directory))
    except ConfigError as e:
        raise click.ClickException(str(e)) from e


class KeygenGroup(click.Group):
    """A program that is one command with options, plus a `keygen` subcommand: every
    invocation without `keygen` runs exactly as before."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("invoke_without_command", True)
        kwargs.setdefault("subcommand_metavar", "[keygen [--help]]")
        super().__init__(*args, **kwargs)
