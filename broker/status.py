"""What `swarm.status` answers: live peers with their profiles beside every peer's metrics,
and the workers of this swarm that advertise themselves on mDNS but are not connected.

Every peer says `live` (it has slots here now), `connected` (the same, spelt for mDNS
readers) and `advertised` (its node has an mDNS record). An advertised-only worker is
shown by its record: `live` and `connected` false, its profile rebuilt from the TXT.

A peer the config file disables (`[peers."NAME"] disabled = true`) is listed, `disabled`
true, whether or not it ever tried to join: its READY is answered with DISCONNECT.

Every peer also says the `timeout` a candidate of REFERENCE_MAX_TOKENS tokens would get on
it now, and where that comes from (override, hint, learned or default: broker/adaptive.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from broker.adaptive import REFERENCE_MAX_TOKENS
from broker.metrics import MetricsBook, PeerMetrics
from broker.policy import TimeoutPolicy
from broker.registry import Registry
from common.mdns import WorkerAdvert


def status_map(registry: Registry, metrics: MetricsBook, broker: dict[str, Any],
               adverts: Mapping[str, WorkerAdvert] | None = None,
               now: float = 0.0, timeouts: TimeoutPolicy | None = None,
               disabled: frozenset[str] = frozenset()) -> dict[str, Any]:
    adverts = adverts or {}
    nodes: dict[str, list] = defaultdict(list)
    for slot in registry.all():
        nodes[slot.peer].append(slot)
    connected = {slot.node for slots in nodes.values() for slot in slots}
    unseen = _advertised_only(adverts, connected, set(nodes))
    known = set(metrics.names())
    peers = []
    for name in sorted(set(nodes) | known | set(unseen) | disabled):
        slots = nodes.get(name, [])
        advert = unseen.get(name)
        profile = slots[0].profile.to_map() if slots else None
        peer_metrics = metrics.peer(name) if name in known else PeerMetrics()
        entry = {
            "name": name,
            "live": bool(slots),
            "connected": bool(slots),
            "advertised": slots[0].node in adverts if slots else advert is not None,
            "disabled": name in disabled,
            "slots": len(slots),
            "busy": sum(1 for s in slots if not s.idle),
            "services": sorted({s.service.decode() for s in slots}),
            "profile": profile if advert is None else advert.profile.to_map(),
            "metrics": peer_metrics.to_map(),
        }
        hint = slots[0].profile if slots else advert.profile if advert else None
        entry["timeout"] = _timeout(timeouts or TimeoutPolicy(), name,
                                    hint.timeout_s if hint else None, peer_metrics)
        if advert is not None:
            entry["addresses"] = list(advert.addresses)
            entry["seen_s_ago"] = round(max(0.0, now - advert.seen_at), 3)
        peers.append(entry)
    return {"broker": broker, "peers": peers}


def _timeout(timeouts: TimeoutPolicy, name: str, hint_s: float | None,
             metrics: PeerMetrics) -> dict[str, Any]:
    t = timeouts.for_peer(name, hint_s, REFERENCE_MAX_TOKENS, metrics)
    return {"s": round(t.s, 3), "source": t.source, "max_tokens": REFERENCE_MAX_TOKENS}


def _advertised_only(adverts: Mapping[str, WorkerAdvert], connected: set[str],
                     live_names: set[str]) -> dict[str, WorkerAdvert]:
    """Adverts of nodes with no slot here, by the peer name they show under: their own, or
    `name~node6` where a connected node already holds that name (as the broker renames)."""
    out: dict[str, WorkerAdvert] = {}
    for node, advert in sorted(adverts.items()):
        if node in connected:
            continue
        name = advert.profile.name
        if name in live_names or name in out:
            name = f"{name}~{node[:6]}"
        out[name] = advert
    return out
