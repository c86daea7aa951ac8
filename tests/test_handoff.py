"""Pieces from a slot's thread to its loop, paced (worker/handoff.py): the first at once,
then at most one hand-over per interval, nothing held for a later token, the outcome last,
and on the real path a paced worker's pieces reach the client complete and in order."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.conftest import run
from tests.stream_util import streamed
from worker.handoff import Handoff

pytestmark = pytest.mark.timeout(90)


async def _handed(pieces: list[str], final: str | None, interval_s: float,
                  until: int) -> list[list[str]]:
    """Hand `pieces` (then `final`) over from a thread at once; what the loop got, one list
    per hand-over that delivered anything."""
    batches: list[list[str]] = []

    class Counted(Handoff):
        def _flush(self, last=None) -> None:
            batches.append([])
            super()._flush(last)

    handoff = Counted(asyncio.get_running_loop(), lambda item: batches[-1].append(item),
                      interval_s)

    def thread() -> None:
        for p in pieces:
            handoff.piece(p)
        if final is not None:
            handoff.final(final)

    threading.Thread(target=thread).start()
    for _ in range(2000):
        if sum(len(b) for b in batches) >= until:
            break
        await asyncio.sleep(0.01)
    return [b for b in batches if b]


def test_the_first_piece_goes_at_once_and_those_after_it_go_together_in_order():
    batches = run(_handed(["a", "b", "c", "d"], "END", 5.0, 5), 60.0)
    flat = [x for b in batches for x in b]
    assert flat == ["a", "b", "c", "d", "END"]  # every piece, in order, the outcome last
    # the first went at once (the pieces after it may have caught it up), the rest together
    # with the outcome, which does not wait for the interval
    assert batches[0][0] == "a" and len(batches) <= 2


def test_a_held_piece_goes_on_its_own_timer_not_with_a_later_token():
    # Two pieces and then nothing (a model that stalls): the second is not held forever
    batches = run(_handed(["a", "b"], None, 0.05, 2), 60.0)
    assert [x for b in batches for x in b] == ["a", "b"]


TOKENS = 40


def test_a_paced_worker_s_pieces_reach_a_real_client_in_fewer_messages_complete(procs, ctx):
    # Given a broker and a synthetic worker that makes a piece every 10 ms (a fast model)
    # When a client asks for every token
    tokens, winner = streamed(procs, ctx, "paced", TOKENS, "--token-delay-s", "0.01")
    # Then it reads every token in order, counted right, a few pieces a message
    assert "".join(e["text"] for e in tokens) == winner["text"]
    assert tokens[-1]["tokens"] == TOKENS == len(winner["text"].split())
    assert len(tokens) <= TOKENS // 2


@pytest.mark.parametrize("bad", ["-0.1", "nan", "inf", "5", "soon"])
def test_a_stream_interval_that_is_no_duration_is_refused_in_one_sentence(bad):
    from click.testing import CliRunner

    from worker.synthetic import main
    result = CliRunner().invoke(main, ["--stream-interval-s", bad])
    assert result.exit_code == 2 and "--stream-interval-s" in result.output
    assert "Traceback" not in result.output
