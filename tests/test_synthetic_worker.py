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


def test_an_answer_ends_every_candidate_so_a_majority_vote_groups_them():
    from broker.voting import answer_key
    # Given two backends that answer 42 and one that answers 7
    def text(seed: int, answer: str | None) -> str:
        backend = SyntheticBackend(tokens=6, answer=answer)
        return backend.generate(task(seed=seed), lambda p: None, threading.Event()).text
    # When candidates of different seeds generate
    a, b, c = text(3, "42"), text(4, "42"), text(5, "7")
    # Then they differ in their words, yet the same answer is one group and another is not
    assert a != b and a.endswith("The answer is 42.") and len(a.split("\n")[0].split()) == 5
    assert answer_key(a) == answer_key(b) == "number:42" != answer_key(c)
    # and without an answer each seed's text is its own group
    assert answer_key(text(3, None)) != answer_key(text(4, None))


def test_an_answer_must_be_one_short_printable_line():
    from click.testing import CliRunner

    from worker.synthetic import main
    for bad in ("", "  ", "4\n2", "x" * 61):
        result = CliRunner().invoke(main, ["--answer", bad])
        assert result.exit_code == 2 and "one printable line" in result.output
