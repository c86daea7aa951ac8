"""click parameter types and callbacks shared by the three CLIs, so bad input is one sentence."""

from __future__ import annotations

import math
from typing import Any

import click

from common import __version__
from common.endpoints import check
from common.errors import ConfigError
from common.mdns import DEFAULT_SWARM, check_swarm

BROKER_ENV = "SWARM_BROKER"  # swarm-ask and swarm-worker read the broker address from it
SWARM_ENV = "SWARM_NAME"     # the three programs read --swarm from it


class FiniteFloat(click.ParamType):
    """A finite number (never nan or inf) in [lo, hi]; `open_lo` excludes lo itself."""

    name = "number"

    def __init__(self, lo: float | None = None, hi: float | None = None,
                 open_lo: bool = False, name: str = "number"):
        self.lo, self.hi, self.open_lo, self.name = lo, hi, open_lo, name

    def convert(self, value: Any, param, ctx) -> float:
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"'{value}' is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"'{value}' is not a finite number", param, ctx)
        too_low = self.lo is not None and (number <= self.lo if self.open_lo else number < self.lo)
        if too_low or self.hi is not None and number > self.hi:
            self.fail(f"{value} is not {self._range()}", param, ctx)
        return number

    def _range(self) -> str:
        low = f"above {self.lo:g}" if self.open_lo else f"at least {self.lo:g}"
        if self.lo is not None and self.hi is not None:
            return f"{low} and at most {self.hi:g}"
        return low if self.lo is not None else f"at most {self.hi:g}"

    def __repr__(self) -> str:
        return f"FiniteFloat({self.lo!r}, {self.hi!r})"


def seconds(lo: float = 0.01, hi: float = 86400.0) -> FiniteFloat:
    """A duration in seconds, from 10 ms to a day unless told otherwise."""
    return FiniteFloat(lo, hi, name="seconds")


def _endpoint(value: str, bind: bool) -> str:
    try:
        return check(value, bind=bind)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from e


def connect_endpoint(ctx, param, value: str | None) -> str | None:
    """click callback for --broker: an endpoint a socket can connect to (None: not given)."""
    return None if value is None else _endpoint(value, bind=False)


def bind_endpoint(ctx, param, value: str) -> str:
    """click callback for --bind: an endpoint a socket can bind (a port in range, or *)."""
    return _endpoint(value, bind=True)


def http_address(ctx, param, value: str) -> tuple[str, int] | None:
    """click callback for --http: HOST:PORT (HOST may be [v6]), or off."""
    if value.strip().lower() in ("off", "none", "no", ""):
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"'{value}' is not HOST:PORT (or off)")
    return host, int(port)


def _swarm_name(ctx, param, value: str) -> str:
    try:
        return check_swarm(value)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from e


def mdns_options(f):
    """--swarm NAME and --no-mdns, alike on the three programs."""
    f = click.option("--no-mdns", "no_mdns", is_flag=True,
                     help="Neither advertise nor look for anything on mDNS.")(f)
    return click.option("--swarm", default=DEFAULT_SWARM, show_default=True,
                        envvar=SWARM_ENV, callback=_swarm_name, metavar="NAME",
                        help="The swarm to join: mDNS keeps swarms on one network apart.")(f)


def version_option(prog: str):
    """--version for every tool: the Swarm version from common.__version__."""
    return click.version_option(__version__, "--version", prog_name=prog,
                                message="%(prog)s %(version)s",
                                help="Print the version and exit.")
