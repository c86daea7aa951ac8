"""Relay throughput without losing a token: a slot that outpaces its socket joins waiting
pieces into one PARTIAL (Chunk.tokens), the broker merges a candidate's waiting token
events, and the client still reads every token, in order."""

from __future__ import annotations

import pytest

from broker.outbox import Outbox
from common import frames as F
from common.bodies import Chunk, Outcome
from common.codec import pack, unpack
from common.errors import BodyError
from common.messages import WorkerReply, decode
from tests.generate_util import CLIENT, Swarm
from tests.stream_util import streamed
from worker.generation import MAX_JOINED_CHARS, coalesce

pytestmark = pytest.mark.timeout(90)
OTHER = b"other-client"


def token(cand: int, tokens: int, text: str, job: str = "j") -> dict:
    return {"event": "token", "job": job, "cand": cand, "peer": "P", "tokens": tokens, "text": text}


def bodies(outbox: Outbox) -> list[tuple[bytes, bool, dict]]:
    out = []
    for env in outbox.drain():
        _, msg = decode(env.frames[1:])
        out.append((env.frames[0], msg.final, unpack(msg.body[0])))
    return out


def test_a_candidates_waiting_token_events_merge_in_order_and_the_latest_count_wins():
    box = Outbox()
    box.token(CLIENT, False, F.SERVICE_GENERATE, token(0, 1, "a"))
    box.token(CLIENT, False, F.SERVICE_GENERATE, token(1, 1, "x"))
    box.token(OTHER, False, F.SERVICE_GENERATE, token(0, 1, "o"))
    box.token(CLIENT, False, F.SERVICE_GENERATE, token(0, 3, "bc"))
    sent = bodies(box)
    assert [(ident, b["cand"], b["text"], b["tokens"]) for ident, _, b in sent] == [
        (CLIENT, 0, "abc", 3), (CLIENT, 1, "x", 1), (OTHER, 0, "o", 1)]
    box.token(CLIENT, False, F.SERVICE_GENERATE, token(0, 4, "d"))  # a new pass: a new event
    assert [b["text"] for _, _, b in bodies(box)] == ["d"]


def test_another_message_to_the_client_closes_the_merging_so_nothing_overtakes_it():
    box = Outbox()
    box.token(CLIENT, False, F.SERVICE_GENERATE, token(0, 1, "a"))
    box.reply(CLIENT, False, F.SERVICE_GENERATE, {"event": "retry", "cand": 0}, final=False)
    box.token(CLIENT, False, F.SERVICE_GENERATE, token(0, 1, "b"))
    box.reply(CLIENT, False, F.SERVICE_GENERATE, {"winner": {}}, final=True)
    sent = bodies(box)
    assert [(final, b.get("event"), b.get("text")) for _, final, b in sent] == [
        (False, "token", "a"), (False, "retry", None), (False, "token", "b"), (True, None, None)]


def test_a_merged_token_event_stays_droppable_and_a_final_does_not():
    box = Outbox()
    box.token(CLIENT, True, F.SERVICE_GENERATE, token(0, 1, "a"))
    box.token(CLIENT, True, F.SERVICE_GENERATE, token(0, 2, "b"))
    box.reply(CLIENT, True, F.SERVICE_GENERATE, {"winner": {}}, final=True)
    envs = box.drain()
    assert [e.droppable for e in envs] == [True, False]
    assert envs[0].frames[:2] == [CLIENT, b""]  # the client's own framing


def test_a_chunk_that_holds_several_pieces_counts_them_all():
    s = Swarm()
    s.add(b"a")
    s.submit(candidates=1, stream="live")
    s.sent()
    slot = s.registry.get(b"a")
    job, cand = slot.job
    for seq, (text, n) in enumerate([("one two ", 2), ("three ", 1)]):
        body = pack(Chunk(job, cand, seq, text, tokens=n).to_map())
        s.service.on_reply(slot, WorkerReply(CLIENT, (body,), False), 1.0)
    tokens = [m[1] for _, m in s.sent() if isinstance(m, tuple) and m[1].get("event") == "token"]
    assert ["".join(t["text"] for t in tokens), tokens[-1]["tokens"]] == ["one two three ", 3]


@pytest.mark.parametrize("bad", [0, -1, True, 2**40, "3", 1.5])
def test_a_chunk_with_an_impossible_token_count_is_refused_by_name(bad):
    body = {**Chunk("j", 0, 0, "t").to_map(), "tokens": bad}
    with pytest.raises(BodyError, match="tokens"):
        Chunk.from_map(body)


def test_a_one_piece_chunk_is_spelt_as_before_and_a_joined_one_says_how_many():
    assert "tokens" not in Chunk("j", 0, 0, "t").to_map()
    assert Chunk.from_map(Chunk("j", 0, 0, "tt", tokens=2).to_map()).tokens == 2


def test_waiting_pieces_of_one_request_join_and_everything_keeps_its_order():
    first, second = object(), object()
    items = [(first, Chunk("j", 0, i, f"p{i} "), False) for i in range(4)]
    items += [(first, Outcome("j", 0, "done"), True), (second, Chunk("k", 1, 0, "q"), False),
              (second, Chunk("k", 1, 1, "r", tokens=2), False)]
    out = coalesce(items)
    assert [(w is first, type(p).__name__, getattr(p, "text", None), getattr(p, "tokens", None),
             getattr(p, "seq", None), final) for w, p, final in out] == [
        (True, "Chunk", "p0 p1 p2 p3 ", 4, 0, False), (True, "Outcome", "done", None, None, True),
        (False, "Chunk", "qr", 3, 0, False)]


def test_a_joined_piece_stays_within_its_size():
    work = object()
    big = "x" * (MAX_JOINED_CHARS // 2 + 1)
    out = coalesce([(work, Chunk("j", 0, i, big), False) for i in range(3)])
    assert [p.tokens for _, p, _ in out] == [1, 1, 1]
    assert all(len(p.text) <= MAX_JOINED_CHARS for _, p, _ in out)


TOKENS = 5000


def test_a_fast_synthetic_worker_s_pieces_reach_a_real_client_complete_and_in_order(procs, ctx):
    # Given a broker and a synthetic worker that emits as fast as it can
    # When a client asks for every token
    tokens, winner = streamed(procs, ctx, "fast", TOKENS, "--token-delay-s", "0")
    # Then the token events joined are the winner's text, counted right, and they came
    # joined (the worker and the broker coalesce what waits): fewer events than tokens
    assert "".join(e["text"] for e in tokens) == winner["text"]
    assert len(winner["text"].split()) == TOKENS and tokens[-1]["tokens"] == TOKENS
    assert len(tokens) < TOKENS
