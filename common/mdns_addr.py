"""Addresses for mDNS: which of ours a broker advertises, and which of a broker's we use.

Endpoints are IPv4: the broker's ROUTER does not listen on IPv6 (ZMQ_IPV6 is off).
SWARM_MDNS_INTERFACES (IPv4 addresses, comma-separated) limits mDNS to those interfaces;
tests use 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence

import ifaddr

from common.mdns import BrokerAdvert

log = logging.getLogger(__name__)

INTERFACES_ENV = "SWARM_MDNS_INTERFACES"
Interfaces = Sequence[ipaddress.IPv4Interface]


def local_interfaces() -> list[ipaddress.IPv4Interface]:
    """This host's IPv4 interfaces (address with prefix), loopback included."""
    try:
        adapters = ifaddr.get_adapters()
    except OSError as e:
        log.warning("cannot list network interfaces: %s", e)
        return []
    return [ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}")
            for adapter in adapters for ip in adapter.ips if ip.is_IPv4]


def env_interfaces() -> list[str] | None:
    """The addresses SWARM_MDNS_INTERFACES limits mDNS to, None when unset."""
    good = []
    for value in os.environ.get(INTERFACES_ENV, "").split(","):
        try:
            good.append(str(ipaddress.IPv4Address(value.strip())))
        except ValueError:
            if value.strip():
                log.warning("%s: '%s' is not an IPv4 address; ignored", INTERFACES_ENV, value)
    return good or None


def advertised_addresses(bind_host: str, interfaces: Interfaces) -> list[str]:
    """The addresses a broker bound to `bind_host` is reached at: each of the host's, loopback
    too, for a wildcard; the address itself for one address; none for IPv6 or ipc."""
    if bind_host in ("*", "0.0.0.0"):
        return list(dict.fromkeys(str(i.ip) for i in interfaces))
    try:
        ip = ipaddress.ip_address(bind_host)
    except ValueError:
        try:
            return sorted({a[4][0] for a in socket.getaddrinfo(bind_host, None, socket.AF_INET)})
        except OSError:
            return []
    return [str(ip)] if ip.version == 4 else []


def choose_endpoint(advert: BrokerAdvert, local: Interfaces) -> str | None:
    """The endpoint of a broker's advert that we can reach: loopback when the broker is on
    this host, else an address on one of our networks, else any non-loopback one."""
    ips = []
    for a in advert.addresses:
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(a)
            if ip.version == 4 and not (ip.is_unspecified or ip.is_multicast):
                ips.append(ip)
    remote = [ip for ip in ips if not ip.is_loopback]
    mine = {i.ip for i in local}
    if not remote or any(ip in mine for ip in remote):  # on this host (loopback: only ours)
        pick = next((ip for ip in ips if ip.is_loopback), None) or \
            next((ip for ip in remote if ip in mine), None)
    else:
        near = [ip for ip in remote if any(ip in i.network for i in local)]
        pick = (near or remote)[0]
    return f"tcp://{pick}:{advert.port}" if pick is not None else None


