"""The synthetic backend the fault tests and benchmarks run as a real worker process."""

from __future__ import annotations

import threading

from common.bodies import Sampling, Task
from worker.synthetic import SyntheticBackend


def task(seed: int = 3, max_tokens: int = 256) -> Task:
    return Task("j1", 0, seed, Sampling(prompt="hi", max_tokens=max_tokens))


def test_it_streams_its_pieces_spelt_from_the_seed_and_reports_them():
    pieces: list[str] = []
    out = SyntheticBackend(tokens=5).generate(task(), pieces.append, threading.Event())
    assert len(pieces) == 5 and out.text == "".join(pieces)
    assert out.usage["completion_tokens"] == 5 and out.finish_reason == "length"
    again = SyntheticBackend(tokens=5).generate(task(), lambda p: None, threading.Event())
    assert again.text == out.text
    other = SyntheticBackend(tokens=5).generate(task(seed=4), lambda p: None, threading.Event())
    assert other.text != out.text


def test_max_tokens_caps_the_pieces():
    out = SyntheticBackend(tokens=50).generate(task(max_tokens=3), lambda p: None, threading.Event())
    assert out.usage["completion_tokens"] == 3


def test_cancel_stops_it_unless_it_is_told_to_ignore_cancel():
    cancelled = threading.Event()
    cancelled.set()
    polite = SyntheticBackend(tokens=20).generate(task(), lambda p: None, cancelled)
    assert polite.finish_reason == "cancelled" and polite.text == ""
    rude = SyntheticBackend(tokens=20, ignore_cancel=True).generate(task(), lambda p: None, cancelled)
    assert rude.usage["completion_tokens"] == 20 and rude.finish_reason == "length"


def test_a_token_delay_must_be_a_finite_duration():
    from click.testing import CliRunner

    from worker.synthetic import main
    for bad in ("nan", "inf", "-1"):  # time.sleep would raise on each, in the slot's thread
        result = CliRunner().invoke(main, ["--token-delay-s", bad])
        assert result.exit_code == 2 and "--token-delay-s" in result.output
