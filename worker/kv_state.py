"""One llama.cpp instance's side of prefix reuse: save and restore its KV state through
the shared store (worker/prefix_cache.py).

`PrefixReuse` wraps the instance's `generate`, the one call that sees a prompt's final
tokens on both the raw-prompt and the chat path. Before generating it claims the prompt
in the store and restores the best published state into sequence 0 (then llama-cpp-
python's own prefix match evaluates only the rest); at the first token it publishes the
prompt's state. llama-cpp-python's `LlamaRAMCache` is not used: its save copies a score
row per batch position (n_batch x n_vocab floats, about 512 MB for Gemma 3), the
per-sequence state API copies only the KV cells (about 4 KB a token for Gemma 3 270M).

Off (`store` None): every generation starts from an empty KV, as if nothing were cached.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from worker.prefix_cache import Claim, Entry, PrefixStore, common_prefix

log = logging.getLogger(__name__)
SEQ = 0  # llama-cpp-python keeps its one sequence as seq 0


def save(llm: Any) -> bytes:
    """The KV state of sequence 0 (the tokens evaluated so far)."""
    import llama_cpp
    size = llama_cpp.llama_state_seq_get_size(llm.ctx, SEQ)
    buf = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(llm.ctx, buf, size, SEQ)
    return ctypes.string_at(buf, written)


def restore(llm: Any, entry: Entry, reuse: int) -> bool:
    """Load `entry` into sequence 0; False (and an empty KV) where llama.cpp refuses it or
    it lacks the sliding-window cells that continuing after `reuse` tokens needs."""
    import llama_cpp
    buf = (ctypes.c_uint8 * len(entry.state)).from_buffer_copy(entry.state)
    ok = llama_cpp.llama_state_seq_set_data(llm.ctx, buf, len(entry.state), SEQ) == len(entry.state)
    n_swa = llama_cpp.llama_model_n_swa(llm.model)
    if ok and n_swa > 0:  # the next position must see the window before it
        low = llama_cpp.llama_memory_seq_pos_min(llama_cpp.llama_get_memory(llm.ctx), SEQ)
        ok = low <= max(0, reuse - n_swa + 1)
    if not ok:
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        return False
    n = len(entry.tokens)
    llm.input_ids[:n] = entry.tokens
    llm.n_tokens = n
    llm._requires_eval = True  # no live logits: generate() evaluates at least one token
    return True


class PrefixReuse:
    """Installs itself as `llm.generate`; `reused` counts generations that restored another
    slot's state, `reused_tokens` the tokens they did not evaluate."""

    def __init__(self, llm: Any, store: PrefixStore | None,
                 cancelled: Callable[[], bool] = lambda: False):
        self.llm, self.store, self.cancelled = llm, store, cancelled
        self.reused = self.reused_tokens = 0
        self._generate = llm.generate
        llm.generate = self.generate

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
        tokens = list(tokens)
        if self.store is None:
            self.llm.reset()  # no reuse at all, not even of this instance's last prompt
            yield from self._generate(tokens, *args, **kwargs)
            return
        claim = self.store.claim(tokens, self._own_prefix(tokens), self.cancelled)
        try:
            self._restore(claim, tokens)
            first = True
            for token in self._generate(tokens, *args, **kwargs):
                if first:
                    first = False
                    self._publish(claim, tokens)
                yield token
        finally:
            claim.release()

    def _own_prefix(self, tokens: list[int]) -> int:
        return common_prefix(self.llm.input_ids[:self.llm.n_tokens].tolist(), tokens)

    def _restore(self, claim: Claim, tokens: list[int]) -> None:
        entry = claim.entry
        if entry is None:
            have = self._own_prefix(tokens)
            if have:
                log.debug("prefix reuse: %d tokens of this instance's KV, %d to evaluate",
                          have, len(tokens) - have)
            return
        reuse = min(len(entry.tokens), len(tokens) - 1)
        if not restore(self.llm, entry, reuse):
            log.debug("prefix reuse: a shared state of %d tokens could not be used",
                      len(entry.tokens))
            return
        self.reused += 1
        self.reused_tokens += reuse
        log.debug("prefix reuse: %d tokens restored from the shared store, %d to evaluate",
                  reuse, len(tokens) - reuse)

    def _publish(self, claim: Claim, tokens: list[int]) -> None:
        """At the first token the KV holds exactly the prompt: share it (once)."""
        store = self.store
        if len(tokens) < store.min_tokens or store.has(tokens):
            claim.release()
            return
        claim.publish(save(self.llm))
