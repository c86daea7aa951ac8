"""The shared prefix store (worker/prefix_cache.py): waiting for another slot's evaluation,
its bounds, and the swarm-worker flag. Logic only: no model here (test_prefix_reuse.py has
the real model)."""

from __future__ import annotations

import threading
import time

import pytest
from click.testing import CliRunner

from common.errors import ModelError
from worker.prefix_cache import PrefixStore

PROMPT = tuple(range(100, 140))  # 40 tokens
LONGER = PROMPT + (7, 8, 9)


def store(**kw) -> PrefixStore:
    return PrefixStore(min_tokens=kw.pop("min_tokens", 8), poll_s=0.05, **kw)


def until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


class Claimer(threading.Thread):
    """A slot claiming `tokens` in its own thread (it may wait there)."""

    def __init__(self, s: PrefixStore, tokens, have: int = 0, cancelled=lambda: False):
        super().__init__(daemon=True)
        self.s, self.tokens, self.have, self.cancelled = s, tokens, have, cancelled
        self.claim = None

    def run(self) -> None:
        self.claim = self.s.claim(self.tokens, self.have, self.cancelled)


@pytest.mark.timeout(60)
def test_a_slot_waits_for_the_prompt_another_slot_is_evaluating_then_restores_it():
    # Given slot A evaluating the prompt
    s = store()
    a = s.claim(PROMPT)
    assert a.entry is None
    # When slot B claims the same prompt, and a longer one that starts with it
    b, c = Claimer(s, PROMPT), Claimer(s, LONGER)
    b.start(), c.start()
    until(lambda: s.waiting == 2)
    assert b.claim is None and c.claim is None
    # Then both get A's state once A publishes it
    a.publish(b"kv of the prompt")
    b.join(30), c.join(30)
    assert b.claim.entry.state == c.claim.entry.state == b"kv of the prompt"
    assert b.claim.entry.tokens == PROMPT
    assert s.waits == 2


@pytest.mark.timeout(60)
def test_a_failed_or_cancelled_evaluation_releases_its_waiters():
    s = store()
    a = s.claim(PROMPT)
    b = Claimer(s, PROMPT)
    b.start()
    until(lambda: s.waiting == 1)
    a.release()  # A failed (or was cancelled) before its first token
    b.join(30)
    assert b.claim is not None and b.claim.entry is None  # B evaluates it itself
    # and a waiter whose own request is cancelled stops waiting
    stop = threading.Event()
    c = Claimer(s, PROMPT, cancelled=stop.is_set)
    c.start()
    until(lambda: s.waiting == 1)
    stop.set()
    c.join(30)
    assert c.claim is not None and c.claim.entry is None


@pytest.mark.timeout(30)
def test_no_wait_for_a_short_prompt_a_different_one_or_what_the_slot_already_has():
    s = store(min_tokens=8)
    s.claim(PROMPT[:5])
    s.claim((1, 2, 3) + PROMPT)
    s.claim(PROMPT)
    # a slot whose own KV already holds the whole prompt does not wait for the pending one
    assert s.claim(PROMPT, have=len(PROMPT)).entry is None
    assert s.claim((5, 5, 5, 5, 5, 5, 5, 5, 5)).entry is None  # nothing pending shares it
    assert s.waits == 0


def test_the_store_keeps_at_most_its_entries_and_bytes_least_recently_used_out_first():
    s = store(max_entries=2, max_bytes=100)
    prompts = [tuple(range(i * 100, i * 100 + 20)) for i in range(3)]
    for p in prompts[:2]:
        s.claim(p).publish(b"x" * 40)
    used = s.claim(prompts[0])
    assert used.entry is not None  # used: now the newest
    used.release()
    s.claim(prompts[2]).publish(b"y" * 40)
    assert {e.tokens for e in s.entries} == {prompts[0], prompts[2]}
    s.claim(prompts[1]).publish(b"z" * 90)  # 40 + 90 > 100 bytes: only it stays
    assert [e.tokens for e in s.entries] == [prompts[1]]
    s.claim(prompts[0]).publish(b"w" * 101)  # larger than the whole store: not kept
    assert [e.tokens for e in s.entries] == [prompts[1]]
    assert s.size_bytes == 90


def test_a_longer_prompt_replaces_its_own_start_and_short_prompts_are_not_kept():
    s = store(min_tokens=8)
    s.claim(PROMPT).publish(b"turn 1")
    s.claim(LONGER).publish(b"turn 2")
    assert [e.tokens for e in s.entries] == [LONGER]
    for tokens, state in ((LONGER + (1,), b"turn 2"), (PROMPT, None)):
        claim = s.claim(tokens)  # PROMPT does not start with LONGER: nothing for it
        assert (claim.entry.state if claim.entry else None) == state
        claim.release()
    s.claim(PROMPT[:7]).publish(b"short")
    assert [e.tokens for e in s.entries] == [LONGER]


@pytest.mark.parametrize("args, config, expected", [
    ((), None, True),
    (("--no-prefix-cache",), None, False),
    ((), "prefix_cache = false\n", False),
    (("--prefix-cache",), "prefix_cache = false\n", True),
])
def test_the_worker_flag_and_config_key_turn_prefix_reuse_off(monkeypatch, tmp_path, model_path,
                                                              args, config, expected):
    import worker.cli as cli
    seen = {}

    def fake_load(setup, prefix_cache=True):
        seen["prefix_cache"] = prefix_cache
        raise ModelError("stopped by the test")

    monkeypatch.setattr(cli, "load", fake_load)
    extra = ()
    if config is not None:
        (tmp_path / "worker.toml").write_text(config)
        extra = ("--config", str(tmp_path / "worker.toml"))
    result = CliRunner().invoke(cli.main, [*extra, *args, "--model", str(model_path),
                                           "--instances", "1", "--no-mdns"])
    assert "stopped by the test" in result.output
    assert seen == {"prefix_cache": expected}
