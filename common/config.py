"""TOML configuration files for the daemons, whose keys are the command's own options.

A key is an option's long name spelt with underscores (`--timeout-s` is `timeout_s`,
`--model` is `model`); dashes are not accepted, so each setting has one spelling. A value
is checked as the flag's would be (its click type and callback), then handed to click as
the option's default (ctx.default_map): a flag on the command line wins over the file, and
the file over the built-in default (an environment variable click reads for an option,
such as SWARM_API_KEY, sits between the two). Every option is a key, with no list to keep:
only --config itself, eager ones (--help, --version) and those a program names in `skip`
(one-off actions such as --print-profile) are not. Extra tables (the broker's [peers]) go
to parsers the program names.

Where: --config PATH, else $SWARM_CONFIG_DIR/NAME, else the first entry of systemd's
$CONFIGURATION_DIRECTORY, else the platform's user config directory for "swarm". A file
missing at that default place is fine (nothing is read); one named with --config must exist.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import platformdirs

from common.cli_types import FiniteFloat
from common.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

CONFIG_DIR_ENV = "SWARM_CONFIG_DIR"
SYSTEMD_DIR_ENV = "CONFIGURATION_DIRECTORY"  # set by systemd from a unit's ConfigurationDirectory=
TableParser = Callable[[Any], Any]  # a table's raw value -> what the program uses; ConfigError


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """What a config file said: the options' raw values by parameter name (click's
    default_map) and each extra table as its parser made it."""

    path: Path | None = None  # the file read; None when there was none
    values: Mapping[str, Any] = field(default_factory=dict)
    tables: Mapping[str, Any] = field(default_factory=dict)
    looked_at: Path | None = None  # the default place looked at, when nothing was read there

    def table(self, name: str, default: Any = None) -> Any:
        return self.tables.get(name, default)

    def announce(self) -> None:
        """Log which file was read; called once logging is set up."""
        if self.path is not None:
            log.info("configuration read from %s (%d option(s)%s)", self.path, len(self.values),
                     "".join(f", [{t}]" for t in self.tables))
        elif self.looked_at is not None:
            log.debug("no configuration file at %s: flags and defaults only", self.looked_at)


def config_dir() -> Path:
    """Where the daemons look for their config files unless told."""
    systemd = os.environ.get(SYSTEMD_DIR_ENV, "").split(":")[0]
    return Path(os.environ.get(CONFIG_DIR_ENV) or systemd or platformdirs.user_config_dir("swarm"))


def read_toml(path: Path) -> dict[str, Any]:
    """The file's table; ConfigError naming the file when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: it is not UTF-8 text") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e


def option_key(param: click.Parameter) -> str:
    """An option's key in a file: its first long name, with underscores."""
    longs = [o for o in param.opts if o.startswith("--")]
    return (longs[0][2:] if longs else param.name or "").replace("-", "_")


def keyed_params(command: click.Command, skip: tuple[str, ...] = ()) -> dict[str, click.Parameter]:
    """The options a file may set, by key."""
    return {option_key(p): p for p in command.params
            if isinstance(p, click.Option) and p.expose_value and not p.is_eager
            and p.name not in skip}


def check(data: Mapping[str, Any], ctx: click.Context, path: Path,
          tables: Mapping[str, TableParser] | None = None, skip: tuple[str, ...] = ()) -> ConfigFile:
    """Check every key of a parsed file against `ctx.command`'s options (and the extra
    tables); ConfigError naming the file and the key at the first bad one."""
    tables = tables or {}
    params = keyed_params(ctx.command, skip)
    values, parsed = {}, {}
    for key, value in data.items():
        try:
            if key in tables:
                parsed[key] = tables[key](value)
            elif key in params:
                _check_value(ctx, params[key], value)
                values[params[key].name] = value
            else:
                raise ConfigError(_unknown(key, [*params, *tables]))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    return ConfigFile(path, values, parsed)


def _unknown(key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
    hint = f"did you mean '{near[0]}'?" if near else "the keys are the long options of --help, " \
                                                       "spelt with underscores"
    return f"unknown key '{key}' ({hint})"


def _check_value(ctx: click.Context, param: click.Option, value: Any) -> None:
    """The value as the flag would take it: of a fitting TOML type, then the option's own
    click type and callback."""
    key = option_key(param)
    items = value if param.multiple and isinstance(value, list) else [value]
    if param.multiple and not isinstance(value, list):
        raise ConfigError(f"key '{key}': expected a list, not {_shown(value)}")
    for item in items:
        wanted = _wanted(param)
        if not _fits(item, wanted):
            raise ConfigError(f"key '{key}': expected {wanted}, not {_shown(item)}")
    try:
        converted = param.type_cast_value(ctx, tuple(value) if param.multiple else value)
        if param.callback is not None:
            param.callback(ctx, param, converted)
    except click.UsageError as e:  # BadParameter included: the flag's own sentence
        raise ConfigError(f"key '{key}': {e.message}") from e


_BOOL, _INT, _NUMBER, _TEXT = "true or false", "a whole number", "a number", "a string or number"


def _wanted(param: click.Option) -> str:
    kind = param.type
    if param.count or isinstance(kind, click.types.IntParamType):
        return _INT
    if param.is_flag or isinstance(kind, click.types.BoolParamType):
        return _BOOL
    if isinstance(kind, (click.types.FloatParamType, FiniteFloat)):
        return _NUMBER
    return _TEXT


def _fits(value: Any, wanted: str) -> bool:
    if isinstance(value, bool):
        return wanted == _BOOL
    if wanted == _BOOL:
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return wanted != _INT
    return isinstance(value, str) and wanted == _TEXT


def _shown(value: Any) -> str:
    """A TOML value as its file spells it, or its kind when it is long or compound."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 40 else value[:40] + "...", ensure_ascii=False)
    return {list: "a list", dict: "a table"}.get(type(value), "a date or time")


def load(ctx: click.Context, given: Path | None, filename: str,
         tables: Mapping[str, TableParser] | None = None, skip: tuple[str, ...] = ()) -> ConfigFile:
    """The file named by --config (which must exist) or at the default place (which may not)."""
    path = given if given is not None else config_dir() / filename
    if given is None and not path.exists():
        return ConfigFile(looked_at=path)
    return check(read_toml(path), ctx, path, tables, skip)


class ConfigFileError(click.ClickException):
    """A bad config file: `PROG: FILE: key 'K': why`, exit status 2 like a usage error."""

    exit_code = 2

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog

    def show(self, file=None) -> None:
        click.echo(f"{self.prog}: {self.format_message()}", err=True, file=file)


def config_option(filename: str, tables: Mapping[str, TableParser] | None = None,
                  skip: tuple[str, ...] = ()):
    """--config PATH, read before every other option so that its values are their defaults;
    the command receives the ConfigFile as `config_file`."""
    def callback(ctx: click.Context, param: click.Parameter, value: Path | None) -> ConfigFile:
        try:
            found = load(ctx, value, filename, tables, skip)
        except ConfigError as e:
            raise ConfigFileError(str(e), ctx.info_name or filename) from e
        ctx.default_map = {**(ctx.default_map or {}), **found.values}
        return found

    return click.option(
        "--config", "config_file", type=click.Path(path_type=Path), default=None,
        is_eager=True, callback=callback, metavar="PATH",
        help=f"TOML file whose keys are these options' long names with underscores "
             f"(flags win over it) [default: {filename} in $SWARM_CONFIG_DIR, else "
             f"$CONFIGURATION_DIRECTORY, else {platformdirs.user_config_dir('swarm')}].")
