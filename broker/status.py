"""What `swarm.status` answers: live peers with their profiles beside every peer's metrics."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from broker.metrics import MetricsBook
from broker.registry import Registry


def status_map(registry: Registry, metrics: MetricsBook, broker: dict[str, Any]) -> dict[str, Any]:
    nodes: dict[str, list] = defaultdict(list)
    for slot in registry.all():
        nodes[slot.peer].append(slot)
    peers = []
    for name in sorted(set(nodes) | set(metrics.names())):
        slots = nodes.get(name, [])
        profile = slots[0].profile.to_map() if slots else None
        peers.append({
            "name": name,
            "live": bool(slots),
            "slots": len(slots),
            "busy": sum(1 for s in slots if not s.idle),
            "services": sorted({s.service.decode() for s in slots}),
            "profile": profile,
            "metrics": metrics.peer(name).to_map(),
        })
    return {"broker": broker, "peers": peers}
