"""Browsing mDNS: the brokers of one swarm (for workers and swarm-ask) and its workers (for
the broker). Each record is resolved, decoded by common/mdns.py as a stranger's, and kept
in a table until its goodbye or its expiry; one of another swarm is left out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from common import mdns
from common.mdns_addr import choose_endpoint, local_interfaces
from common.mdns import BrokerAdvert, WorkerAdvert

if TYPE_CHECKING:
    from common.discovery import Mdns

log = logging.getLogger(__name__)

RESOLVE_MS = 3000  # how long one record may take to resolve
MAX_RECORDS = 1024  # a network that floods us with records gets no more table than this


class _Browser:
    """Browses one service type; subclasses say what a resolved record becomes."""

    type_ = ""

    def __init__(self, mdns_: "Mdns", swarm: str):
        self.mdns, self.swarm = mdns_, swarm
        self.browser: AsyncServiceBrowser | None = None
        self.tasks: set[asyncio.Task] = set()  # resolutions in flight, kept so none is lost
        self.changed = asyncio.Event()

    def start(self) -> bool:
        if self.mdns.aiozc is None:
            return False
        try:
            self.browser = AsyncServiceBrowser(self.mdns.aiozc.zeroconf, [self.type_],
                                               handlers=[self._on_change])
        except Exception as e:
            log.warning("cannot browse mDNS for %s: %s", self.type_, e)
            return False
        return True

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.browser is not None:
            browser, self.browser = self.browser, None
            with contextlib.suppress(Exception):
                await browser.async_cancel()

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._removed(name)
            return
        task = asyncio.ensure_future(self._resolve(zeroconf, service_type, name))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        try:
            if not await info.async_request(zeroconf, RESOLVE_MS):
                log.debug("mDNS record %s did not resolve", name)
                return
            self._resolved(name, info)
        except Exception as e:  # a stranger's record must never end the browse
            log.debug("mDNS record %s: %s", name, e)

    def _resolved(self, name: str, info: AsyncServiceInfo) -> None:
        raise NotImplementedError

    def _removed(self, name: str) -> None:
        raise NotImplementedError


class BrokerFinder(_Browser):
    """The brokers of one swarm; the one heard from last is the current one. With a `pin`
    (a broker's CURVE public key) only a broker advertising that key counts: the record is
    no proof (mDNS is unauthenticated), the CURVE handshake with the pinned key is."""

    type_ = mdns.BROKER_TYPE

    def __init__(self, mdns_: "Mdns", swarm: str, pin: str | None = None):
        super().__init__(mdns_, swarm)
        self.pin = pin
        self.brokers: dict[str, BrokerAdvert] = {}  # instance name -> advert, oldest first
        self.ignored: set[str] = set()  # brokers left out for their key, each said once
        self._looking_said = False

    def current(self) -> str | None:
        """The endpoint to use now: the latest broker we can reach, None while none is known."""
        local = local_interfaces()
        for advert in reversed(self.brokers.values()):
            endpoint = choose_endpoint(advert, local)
            if endpoint is not None:
                return endpoint
        return None

    async def find(self, timeout_s: float) -> str | None:
        """The first broker endpoint found within `timeout_s`, else None."""
        with contextlib.suppress(asyncio.TimeoutError):
            return await asyncio.wait_for(self.wait(say=False), timeout_s)
        return None

    async def wait(self, say: bool = True) -> str:
        """The current endpoint, waiting as long as it takes for one (said once in the log)."""
        while (endpoint := self.current()) is None:
            if say and not self._looking_said:
                self._looking_said = True
                log.info("looking for a swarm broker on mDNS (swarm %s)", self.swarm)
            self.changed.clear()
            await self.changed.wait()
        return endpoint

    def _resolved(self, name: str, info: AsyncServiceInfo) -> None:
        advert = mdns.broker_from_txt(info.properties, info.port, info.parsed_addresses(), name)
        self.brokers.pop(name, None)
        if advert is None or advert.swarm != self.swarm or len(self.brokers) >= MAX_RECORDS:
            return
        if self.pin and advert.key != self.pin:
            self._ignore(name, advert)
            return
        self.brokers[name] = advert  # the latest heard goes last
        log.info("found swarm broker %s at %s", name, choose_endpoint(advert, local_interfaces()))
        self.changed.set()

    def _ignore(self, name: str, advert: BrokerAdvert) -> None:
        if name in self.ignored or len(self.ignored) >= MAX_RECORDS:
            return
        self.ignored.add(name)
        why = f"its key is {advert.key}" if advert.key else "it advertises no key (not --secure)"
        log.warning("ignoring swarm broker %s: %s, not the pinned %s", name, why, self.pin)

    def _removed(self, name: str) -> None:
        if self.brokers.pop(name, None) is not None:
            log.info("swarm broker %s left", name)
            self.changed.set()


class WorkerBrowser(_Browser):
    """The workers of one swarm as their records show them, keyed by node id."""

    type_ = mdns.WORKER_TYPE

    def __init__(self, mdns_: "Mdns", swarm: str):
        super().__init__(mdns_, swarm)
        self.records: dict[str, WorkerAdvert] = {}  # instance name -> advert

    def adverts(self) -> dict[str, WorkerAdvert]:
        return {a.profile.node_id: a for a in self.records.values()}

    def _resolved(self, name: str, info: AsyncServiceInfo) -> None:
        advert = mdns.worker_from_txt(info.properties, info.parsed_addresses(), time.monotonic(),
                                      name)
        if advert is None or advert.profile.swarm != self.swarm:
            self.records.pop(name, None)
            return
        if name not in self.records and len(self.records) >= MAX_RECORDS:
            log.debug("mDNS record %s: %d workers known already; ignored", name, MAX_RECORDS)
            return
        self.records[name] = advert
        self.changed.set()

    def _removed(self, name: str) -> None:
        if self.records.pop(name, None) is not None:
            self.changed.set()
