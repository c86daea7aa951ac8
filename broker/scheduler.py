"""Which slot takes a candidate: pure policy.

A candidate goes to an idle slot that can serve its job (`Need`: the model asked for, and
a context window larger than one the prompt already overflowed). Different peers first:
the node with the fewest candidates of this job wins, then a slot this job has not used,
then the slot idle longest. A slot may take a second candidate of the same job only if its
worker allows seed variation, and a re-dispatched candidate never returns to a slot that
failed it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from broker.registry import Slot
from common.frames import ANY_MODEL


@dataclass(frozen=True, slots=True)
class Need:
    """What a slot must offer a job, whatever its load."""

    model: str | None = None       # None or ANY_MODEL: any model
    ctx_over: int | None = None    # the prompt overflowed a context this large: a known
                                   # n_ctx must be larger (0, unknown, is still a chance)

    def model_among(self, models: set[str]) -> bool:
        """Does one of these live models serve it?"""
        return self.model in (None, ANY_MODEL) or self.model in models

    def met_by(self, slot: Slot) -> bool:
        if self.model not in (None, ANY_MODEL) and slot.profile.model != self.model:
            return False
        n_ctx = slot.profile.n_ctx
        return self.ctx_over is None or n_ctx == 0 or n_ctx > self.ctx_over


ANY = Need()


def eligible(slot: Slot, used_slots: set[bytes], avoid: set[bytes], need: Need = ANY) -> bool:
    if slot.identity in avoid or not need.met_by(slot):
        return False
    return slot.identity not in used_slots or slot.profile.seed_variation


def pick(idle: Iterable[Slot], used_slots: set[bytes], used_nodes: Counter,
         avoid: set[bytes] = frozenset(), need: Need = ANY) -> Slot | None:
    """The best idle slot for one more candidate of a job, or None."""
    options = [s for s in idle if eligible(s, used_slots, avoid, need)]
    if not options:
        return None
    return min(options, key=lambda s: (used_nodes[s.node], s.identity in used_slots,
                                       s.assigned_at, s.identity))


def placeable(serving: Iterable[Slot], used_slots: set[bytes], avoid: set[bytes] = frozenset(),
              need: Need = ANY) -> bool:
    """Could any live slot, idle or busy, ever take this candidate?"""
    return any(eligible(s, used_slots, avoid, need) for s in serving)
