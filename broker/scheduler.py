"""Which slot takes a candidate: pure policy.

A candidate goes to an idle slot. Different peers first: the node with the fewest
candidates of this job wins, then a slot this job has not used, then the slot idle longest.
A slot may take a second candidate of the same job only if its worker allows seed
variation, and a re-dispatched candidate never returns to a slot that failed it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from broker.registry import Slot


def eligible(slot: Slot, used_slots: set[bytes], avoid: set[bytes]) -> bool:
    if slot.identity in avoid:
        return False
    return slot.identity not in used_slots or slot.profile.seed_variation


def pick(idle: Iterable[Slot], used_slots: set[bytes], used_nodes: Counter,
         avoid: set[bytes] = frozenset()) -> Slot | None:
    """The best idle slot for one more candidate of a job, or None."""
    options = [s for s in idle if eligible(s, used_slots, avoid)]
    if not options:
        return None
    return min(options, key=lambda s: (used_nodes[s.node], s.identity in used_slots,
                                       s.assigned_at, s.identity))


def placeable(serving: Iterable[Slot], used_slots: set[bytes], avoid: set[bytes] = frozenset()) -> bool:
    """Could any live slot, idle or busy, ever take this candidate?"""
    return any(eligible(s, used_slots, avoid) for s in serving)
