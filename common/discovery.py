"""mDNS I/O with zeroconf's asyncio API: advertise a broker or a worker, find a broker,
browse workers. Names and TXT are common/mdns.py, addresses common/mdns_addr.py, the
browsers common/browsers.py; the context managers at the end are what programs use.

Everything fails softly: where zeroconf cannot start (no multicast interface, no
permission) the program logs one warning and goes on without mDNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from common import mdns
from common.browsers import BrokerFinder, WorkerBrowser
from common.endpoints import bind_host
from common.mdns_addr import advertised_addresses, env_interfaces, local_interfaces
from common.profile import WorkerProfile

log = logging.getLogger(__name__)

TTL_S = 120        # records a departed peer leaves in caches expire within this
CLOSE_S = 2.0      # the most a goodbye may hold up a shutdown


# -- one zeroconf per process --------------------------------------------------------------
class Mdns:
    """The process's AsyncZeroconf, started softly; `interfaces` None means all of them."""

    def __init__(self, interfaces: list[str] | None = None):
        self.interfaces = interfaces if interfaces is not None else env_interfaces()
        self.aiozc: AsyncZeroconf | None = None

    async def start(self) -> bool:
        try:
            kwargs = {"interfaces": self.interfaces} if self.interfaces else {}
            self.aiozc = AsyncZeroconf(ip_version=IPVersion.V4Only, **kwargs)
        except Exception as e:  # OSError, or zeroconf's own: either way, no mDNS here
            log.warning("mDNS is unavailable (%s); going on without it", e)
            return False
        return True

    async def close(self) -> None:
        if self.aiozc is not None:
            aiozc, self.aiozc = self.aiozc, None
            with contextlib.suppress(Exception):  # goodbyes are a courtesy
                await asyncio.wait_for(aiozc.async_close(), CLOSE_S)

    def addresses(self) -> list[str]:
        """The addresses we advertise for this host: the limited set, else every IPv4."""
        if self.interfaces:
            return list(self.interfaces)
        found = local_interfaces()
        outside = [str(i.ip) for i in found if not i.ip.is_loopback]
        return outside or [str(i.ip) for i in found]


class Advertiser:
    """One service record, registered until closed; a name taken by another is renamed."""

    def __init__(self, mdns_: Mdns, info: AsyncServiceInfo):
        self.mdns, self.info = mdns_, info
        self.registered = False
        self.task: asyncio.Task | None = None

    def begin(self) -> None:
        """Register in the background: probing the name takes a second or two, and the
        program serves meanwhile."""
        self.task = asyncio.ensure_future(self.start())

    async def start(self) -> bool:
        if self.mdns.aiozc is None:
            return False
        try:
            await (await self.mdns.aiozc.async_register_service(self.info, allow_name_change=True))
        except Exception as e:
            log.warning("cannot advertise %s on mDNS: %s", self.info.name, e)
            return False
        self.registered = True
        log.info("advertising %s on mDNS at %s", self.info.name,
                 ", ".join(self.info.parsed_addresses()))
        return True

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.registered and self.mdns.aiozc is not None:
            self.registered = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    await self.mdns.aiozc.async_unregister_service(self.info), CLOSE_S)


def broker_advertiser(mdns_: Mdns, swarm: str, endpoint: str, addresses: list[str],
                      key: str = "") -> Advertiser:
    port = int(endpoint.rsplit(":", 1)[1])
    name = mdns.broker_instance(swarm, socket.gethostname(), port)
    txt = mdns.broker_txt(swarm, port, key=key)
    return Advertiser(mdns_, _info(mdns.BROKER_TYPE, name, port, txt, addresses))


def worker_advertiser(mdns_: Mdns, profile: WorkerProfile) -> Advertiser:
    return Advertiser(mdns_, _info(mdns.WORKER_TYPE, mdns.worker_instance(profile),
                                   mdns.WORKER_PORT, mdns.worker_txt(profile), mdns_.addresses()))


def _info(type_: str, name: str, port: int, txt: dict[str, str],
          addresses: list[str]) -> AsyncServiceInfo:
    return AsyncServiceInfo(type_, name, port=port, properties=txt,
                            server=mdns.server_name(name), parsed_addresses=addresses,
                            host_ttl=TTL_S, other_ttl=TTL_S)


# -- what programs use ---------------------------------------------------------------------
@contextlib.asynccontextmanager
async def broker_mdns(swarm: str, endpoint: str, enabled: bool = True, key: str = "",
                      on_settled: Callable[[], None] | None = None
                      ) -> AsyncIterator[WorkerBrowser | None]:
    """Advertise a bound broker (with its CURVE public `key` under --secure) and browse its
    swarm's workers while inside; yields the browser, None without mDNS. A broker bound to
    one address is advertised on it alone. `on_settled` is called once the advert is
    registered (or failed to be, or there is none): systemd's READY waits for it."""
    if not enabled:
        _settled(None, on_settled)
        yield None
        return
    host = bind_host(endpoint) or ""
    host = "" if host.startswith("[") else host  # IPv6 (not advertised): as if unbound
    limited = env_interfaces()
    wildcard = host in ("*", "0.0.0.0")
    interfaces = limited if limited or wildcard else advertised_addresses(host, [])
    addresses = advertised_addresses(host, local_interfaces() if not limited else
                                     [ipaddress.IPv4Interface(a) for a in limited])
    runtime = Mdns(interfaces or None)
    if not await runtime.start():
        _settled(None, on_settled)
        yield None
        return
    advertiser = broker_advertiser(runtime, swarm, endpoint, addresses, key) if addresses else None
    browser = WorkerBrowser(runtime, swarm)
    try:
        if advertiser is None:
            log.warning("%s is not an IPv4 TCP endpoint: the broker is not advertised on mDNS",
                        endpoint)
        else:
            advertiser.begin()
        _settled(advertiser, on_settled)
        yield browser if browser.start() else None
    finally:
        await browser.close()
        if advertiser is not None:
            await advertiser.close()
        await runtime.close()


@contextlib.asynccontextmanager
async def worker_mdns(profile: WorkerProfile, find: bool, enabled: bool = True,
                      pin: str | None = None, on_settled: Callable[[], None] | None = None
                      ) -> AsyncIterator[BrokerFinder | None]:
    """Advertise a worker node while inside; with `find`, also browse for its swarm's
    brokers (only the one whose key is `pin`, if given) and yield the finder (None without
    mDNS, or without `find`). `on_settled`: as for `broker_mdns`."""
    if not enabled:
        _settled(None, on_settled)
        yield None
        return
    runtime = Mdns()
    if not await runtime.start():
        _settled(None, on_settled)
        yield None
        return
    advertiser = worker_advertiser(runtime, profile)
    finder = BrokerFinder(runtime, profile.swarm, pin) if find else None
    try:
        started = finder is not None and finder.start()
        advertiser.begin()
        _settled(advertiser, on_settled)
        yield finder if started else None
    finally:
        if finder is not None:
            await finder.close()
        await advertiser.close()
        await runtime.close()


def _settled(advertiser: Advertiser | None, callback: Callable[[], None] | None) -> None:
    """Call `callback` once the advertiser's registration ended (now, without one)."""
    if callback is None:
        return
    if advertiser is None or advertiser.task is None:
        callback()
    else:
        advertiser.task.add_done_callback(lambda _task: callback())


async def find_broker(swarm: str, timeout_s: float, pin: str | None = None) -> str | None:
    """One look for a broker of `swarm` (swarm-ask), only one whose key is `pin` if given:
    its endpoint, None if none answers."""
    runtime = Mdns()
    if not await runtime.start():
        return None
    finder = BrokerFinder(runtime, swarm, pin)
    try:
        return await finder.find(timeout_s) if finder.start() else None
    finally:
        await finder.close()
        await runtime.close()
