"""The evaluated prompts a worker's model instances share, so a long prompt is evaluated once.

A coding agent sends the same system prompt and tool schemas with every request: each of a
job's candidates, and each turn of a conversation, starts with thousands of tokens that
some slot of this process has already evaluated. After a slot has evaluated a prompt it
publishes the prompt's KV state here (`publish`, bytes from worker/kv_state.py); a slot
whose prompt starts with a published prompt restores that state and evaluates only the
rest. A slot whose prompt starts with a prompt another slot is evaluating right now waits
for that one to publish, fail or be cancelled (`claim`), instead of evaluating it too.

Only whole published prompts are reused (the new prompt starts with all of one): a model
with sliding-window attention saves only the window's cells of its local layers, so a
state is good for continuing at its end, not for cutting it part-way. Pure logic and one
lock: no llama.cpp here. The store is bounded in entries and bytes, least recently used
out first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIN_TOKENS = 256            # shorter prompts are cheap to evaluate again
MAX_ENTRIES = 4
MAX_BYTES = 512 * 2**20     # about 17 opencode-sized prompts of the bundled model
MAX_WAIT_S = 600.0          # a waiter gives up after this even if the other never ends
POLL_S = 0.2                # how often a waiter looks at its own cancel event


@dataclass(frozen=True, slots=True)
class Entry:
    tokens: tuple[int, ...]
    state: bytes  # the KV state of exactly these tokens, as kv_state.save wrote it


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def starts_with(tokens: Sequence[int], prefix: Sequence[int]) -> bool:
    return len(prefix) <= len(tokens) and common_prefix(tokens, prefix) == len(prefix)


class Claim:
    """One slot's generation in the store: what it may restore (`entry`, or None: evaluate
    from what it has), and its evaluation in progress, which others may wait for until it
    publishes or is released (always release it, in a finally)."""

    def __init__(self, store: PrefixStore, tokens: tuple[int, ...], entry: Entry | None):
        self.store, self.tokens, self.entry = store, tokens, entry
        self.open = True

    def publish(self, state: bytes) -> None:
        self.store._publish(self, state)

    def release(self) -> None:
        self.store._release(self)


class PrefixStore:
    """Shared by the model instances of one process that load the same model and n_ctx."""

    def __init__(self, min_tokens: int = MIN_TOKENS, max_entries: int = MAX_ENTRIES,
                 max_bytes: int = MAX_BYTES, max_wait_s: float = MAX_WAIT_S,
                 poll_s: float = POLL_S):
        self.min_tokens, self.max_entries, self.max_bytes = min_tokens, max_entries, max_bytes
        self.max_wait_s, self.poll_s = max_wait_s, poll_s
        self._entries: OrderedDict[tuple[int, ...], Entry] = OrderedDict()  # oldest use first
        self._pending: list[Claim] = []
        self._cond = threading.Condition()
        self.waits = 0    # claims that waited for another slot's evaluation
        self.waiting = 0  # claims waiting right now

    @property
    def entries(self) -> list[Entry]:
        with self._cond:
            return list(self._entries.values())

    @property
    def size_bytes(self) -> int:
        with self._cond:
            return sum(len(e.state) for e in self._entries.values())

    def has(self, tokens: Sequence[int]) -> bool:
        with self._cond:
            return tuple(tokens) in self._entries

    def claim(self, tokens: Sequence[int], have: int = 0,
              cancelled: Callable[[], bool] = lambda: False) -> Claim:
        """Start a generation of `tokens` whose first `have` are evaluated already (the
        slot's own KV). Waits while another slot evaluates a longer start of this prompt."""
        key = tuple(tokens)
        deadline, waited = time.monotonic() + self.max_wait_s, False
        with self._cond:
            while True:
                entry = self._best_entry(key)
                best = max(have, len(entry.tokens) if entry else 0)
                if not self._worth_waiting(key, best) or cancelled():
                    break
                if time.monotonic() >= deadline:
                    log.warning("prefix cache: gave up waiting for another slot's evaluation")
                    break
                waited = True
                self.waiting += 1
                self._cond.wait(self.poll_s)
                self.waiting -= 1
            self.waits += waited
            if entry is not None and len(entry.tokens) > have:
                self._entries.move_to_end(entry.tokens)
            else:
                entry = None
            claim = Claim(self, key, entry)
            self._pending.append(claim)
            return claim

    def _best_entry(self, key: tuple[int, ...]) -> Entry | None:
        fits = [e for e in self._entries.values() if starts_with(key, e.tokens)]
        return max(fits, key=lambda e: len(e.tokens), default=None)

    def _worth_waiting(self, key: tuple[int, ...], best: int) -> bool:
        return any(len(c.tokens) >= self.min_tokens and len(c.tokens) > best
                   and starts_with(key, c.tokens) for c in self._pending)

    def _publish(self, claim: Claim, state: bytes) -> None:
        with self._cond:
            key = claim.tokens
            if len(key) >= self.min_tokens and len(state) <= self.max_bytes:
                for old in [k for k in self._entries if starts_with(key, k)]:
                    del self._entries[old]  # this one serves every prompt the old one did
                self._entries[key] = Entry(key, state)
                self._evict()
            self._drop(claim)

    def _release(self, claim: Claim) -> None:
        with self._cond:
            self._drop(claim)

    def _drop(self, claim: Claim) -> None:
        if claim.open:
            claim.open = False
            self._pending.remove(claim)
            self._cond.notify_all()

    def _evict(self) -> None:
        total = sum(len(e.state) for e in self._entries.values())
        while self._entries and (len(self._entries) > self.max_entries or total > self.max_bytes):
            _, old = self._entries.popitem(last=False)
            total -= len(old.state)
