"""The web page's events (broker/watch.py), driven through the real job flow with fake slots:
nothing while nobody watches, every step of a job once watched, tokens merged, a slow page
dropped, the peer list only when it changed."""

from __future__ import annotations

import json

import pytest

from broker.watch import MAX_BACKLOG, PEERS_EVERY_S, RECENT_JOBS, Watch, Watcher, sse
from tests.generate_util import Swarm


def watched(slots=(b"a", b"b")) -> tuple[Swarm, Watch]:
    sw = Swarm()
    sw.service.watch = Watch(clock=lambda: 1_000_000.0)
    for identity in slots:
        sw.add(identity)
    return sw, sw.service.watch


def events(watcher: Watcher) -> list[dict]:
    """Every event of the messages waiting for this watcher, in order."""
    out = []
    for message in watcher.messages:
        assert message.startswith(b"data: ") and message.endswith(b"\n\n")
        out += json.loads(message[6:])
    watcher.messages.clear()
    return out


def snapshot(watch: Watch, sw: Swarm, watcher: Watcher) -> dict:
    first = watch.subscribe(watcher, watch.snapshot({}, [], list(sw.service.jobs.values()), 0.0))
    return json.loads(first[6:])[0]


def test_nobody_watching_queues_nothing_but_keeps_recent_jobs():
    sw, watch = watched()
    for i in range(RECENT_JOBS + 3):
        sw.submit(now=float(i), candidates=2)
        sw.reply(b"a", float(i), "4")
        sw.reply(b"b", float(i), "4")
    assert not watch.active and watch.pending == []
    assert len(watch.recent) == RECENT_JOBS  # a page opened later still sees the last ones
    assert watch.flush(100.0, lambda: [{"name": "x"}]) == 0  # no watcher: the peers not built


def test_a_job_plays_out_as_events_once_watched():
    sw, watch = watched()
    page = Watcher()
    assert snapshot(watch, sw, page)["jobs"] == []
    sw.submit(now=1.0, candidates=2)
    sw.reply(b"a", 1.1, "The ans", final=False)
    sw.reply(b"a", 1.2, "wer is 4", final=False)
    sw.reply(b"b", 1.2, "4", final=False)
    watch.flush(1.3)
    got = events(page)
    assert [e["type"] for e in got[:3]] == ["job", "cand", "cand"]
    job = got[0]["job"]
    assert job["n"] == 2 and job["state"] == "running" and job["question"] == "2+2="
    assert {(e["cand"], e["event"], e["peer"]) for e in got[1:3]} == \
        {(0, "dispatched", "A"), (1, "dispatched", "B")}
    tokens = [e for e in got if e["event" if e["type"] == "cand" else "type"] == "token"]
    # a candidate's two pieces in one flush are one event, its text the two joined
    assert {e["cand"]: e["text"] for e in tokens} == {0: "The answer is 4", 1: "4"}
    sw.reply(b"a", 2.0, "The answer is 4.")
    sw.reply(b"b", 2.1, "4")
    watch.flush(2.2)
    got = events(page)
    done = {e["cand"]: e for e in got if e["type"] == "cand"}
    assert done[0]["event"] == "done" and done[0]["text"] == "The answer is 4."  # whole
    assert done[0]["latency_s"] == 1.0
    end = next(e for e in got if e["type"] == "end")
    assert end["state"] == "done" and end["final"]["winner"]["cand"] in (0, 1)
    assert end["took_s"] == 1.1


def test_tokens_merge_only_up_to_another_event_of_the_same_candidate():
    sw, watch = watched(slots=(b"a",))
    page = Watcher()
    snapshot(watch, sw, page)
    sw.submit(now=0.0, candidates=1)
    sw.add(b"c")
    sw.reply(b"a", 0.1, "x", final=False)
    sw.reply(b"a", 0.2, error="boom")  # that try failed: retried on c at once
    sw.reply(b"c", 0.4, "y", final=False)
    sw.reply(b"c", 0.5, "z", final=False)
    watch.flush(0.6)
    got = [(e["event"], e["text"], e["state"]) for e in events(page) if e["type"] == "cand"]
    assert got == [("dispatched", "", "running"), ("token", "x", "running"),
                   ("retry", "", "pending"), ("dispatched", "", "running"),
                   ("token", "yz", "running")]


def test_a_new_page_sees_each_event_once_and_the_text_so_far():
    sw, watch = watched(slots=(b"a",))
    first = Watcher()
    snapshot(watch, sw, first)
    sw.submit(now=0.0, candidates=1)
    sw.reply(b"a", 0.1, "Par", final=False)
    second = Watcher()
    snap = snapshot(watch, sw, second)  # what was pending went to the first page first
    cand = snap["jobs"][0]["cands"][0]
    assert (cand["state"], cand["text"], cand["peer"]) == ("running", "Par", "A")
    sw.reply(b"a", 0.2, "is", final=False)
    watch.flush(0.3)
    texts = lambda w: "".join(e["text"] for e in events(w) if e.get("event") == "token")
    assert texts(first) == "Paris" and texts(second) == "is"


def test_recent_jobs_come_after_the_running_ones_newest_first():
    sw, watch = watched(slots=(b"a",))
    for i in range(2):
        sw.submit(now=float(i), candidates=1)
        sw.reply(b"a", float(i) + 0.5, f"answer {i}")
    sw.submit(now=5.0, candidates=1)
    snap = snapshot(watch, sw, Watcher())
    assert [(j["state"], j["cands"][0]["text"]) for j in snap["jobs"]] == \
        [("running", ""), ("done", "answer 1"), ("done", "answer 0")]
    assert snap["jobs"][1]["final"]["winner"]["text"] == "answer 1"
    assert snap["jobs"][1]["took_s"] == 0.5


def test_a_page_that_does_not_read_is_dropped_and_the_rest_go_on():
    sw, watch = watched(slots=(b"a",))
    slow, fast = Watcher(), Watcher()
    snapshot(watch, sw, slow)
    snapshot(watch, sw, fast)
    sw.submit(now=0.0, candidates=1)
    for i in range(MAX_BACKLOG + 1):
        sw.reply(b"a", 0.1, "t", final=False)
        watch.flush(0.1)
        fast.messages.clear()
    assert slow.dropped and not fast.dropped
    assert watch.watchers == {fast} and watch.stats["dropped"] == 1
    watch.unsubscribe(fast)
    assert not watch.active
    sw.reply(b"a", 0.2, "t", final=False)
    assert watch.pending == []


def test_the_peer_list_goes_out_when_it_changed_at_most_every_second():
    sw, watch = watched(slots=())
    page = Watcher()
    snapshot(watch, sw, page)  # the snapshot had the empty list
    peers = [[]]
    calls = []

    def listed():
        calls.append(1)
        return peers[0]
    watch.flush(PEERS_EVERY_S, listed)
    assert events(page) == []  # unchanged: nothing sent
    peers[0] = [{"name": "A", "live": True}]
    watch.flush(PEERS_EVERY_S + 0.1, listed)
    assert len(calls) == 1  # not looked at again within the second
    watch.flush(2 * PEERS_EVERY_S, listed)
    assert events(page) == [{"type": "peers", "peers": [{"name": "A", "live": True}]}]


def test_a_job_refused_or_failed_is_shown_failed():
    sw, watch = watched(slots=(b"a",))
    page = Watcher()
    snapshot(watch, sw, page)
    sw.submit(now=0.0, candidates=1)
    sw.reply(b"a", 0.1, error="out of memory")
    watch.flush(0.2)
    got = events(page)
    end = got[-1]
    assert end["type"] == "end" and end["state"] == "failed"
    assert "out of memory" in end["final"]["error"]
    failed = [e for e in got if e.get("event") in ("retry", "failed")]
    assert failed and all("out of memory" in e["error"] for e in failed)


def test_a_value_json_cannot_carry_becomes_null_not_a_broken_stream():
    message = sse([{"type": "end", "final": {"votes": {"0": float("nan")},
                                             "usage": [float("inf"), 1.5]}}])
    assert json.loads(message[6:], parse_constant=lambda c: pytest.fail(c)) == \
        [{"type": "end", "final": {"votes": {"0": None}, "usage": [None, 1.5]}}]


def test_a_second_page_does_not_hide_a_peer_change_from_the_first():
    sw, watch = watched(slots=())
    first, second = Watcher(), Watcher()
    first_msg = watch.subscribe(first, watch.snapshot({}, [], [], 0.0))
    assert json.loads(first_msg[6:])[0]["peers"] == []
    changed = [{"name": "A", "live": True}]
    watch.subscribe(second, watch.snapshot({}, changed, [], 0.5))  # it starts from the new list
    watch.flush(PEERS_EVERY_S, lambda: changed)
    assert events(first) == [{"type": "peers", "peers": changed}]
