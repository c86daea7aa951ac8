"""The broker's state on disk (broker/store.py, peer_state.py, history.py): pure store tests
on real SQLite files, no sockets."""

from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest

from broker import peer_state
from broker.adaptive import Learning
from broker.history import History, limit_of, valid_record
from broker.metrics import MetricsBook, PeerMetrics
from broker.store import SCHEMA_VERSION, Store
from common.errors import BodyError

pytestmark = pytest.mark.timeout(60)


def _job(i: int) -> dict:
    return {"job": f"{i:012x}", "at": 1_700_000_000.0 + i, "question": "ab" * 8,
            "strategy": "auto", "method": "majority", "outcome": "ok", "error": None,
            "winner": {"peer": "gpu", "cand": 0}, "total_s": 0.5,
            "candidates": [{"cand": 0, "peer": "gpu", "state": "done", "ok": True, "tokens": 4,
                            "ttft_s": 0.1, "latency_s": 0.4, "error": None}]}


def _busy_peer() -> PeerMetrics:
    m = PeerMetrics()
    for i in range(5):
        m.started()
        m.succeeded(1.0 + i / 10, 0.2 + i / 100, 20 + i, prompt_chars=100)
    m.started()
    m.failed("gpu went away", timeout=True)
    m.wins = 3
    return m


def _written(store: Store, count: int) -> None:
    for _ in range(2000):
        if store.stats["written"] >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"the writer wrote {store.stats['written']} of {count} records")


def test_peer_metrics_and_jobs_round_trip_through_the_file(tmp_path):
    # Given a store with a peer's metrics and two jobs written
    path = tmp_path / "state" / "broker.sqlite3"
    store = Store(path, keep=10)
    peer = _busy_peer()
    assert store.put("peers", [("gpu", peer_state.snapshot(peer))])
    assert store.put("job", _job(1)) and store.put("job", _job(2))
    store.close()
    # When the file is opened again
    again = Store(path, keep=10)
    peers, jobs = again.load()
    again.close()
    # Then the peer's metrics read back as the same, learned timeout included
    assert [name for name, _ in peers] == ["gpu"]
    back = peer_state.restore(peers[0][1])
    assert back.to_map() == peer.to_map()
    learning = Learning()
    assert learning.learned_s(back.ttfts, back.rates, 64, back.timeouts_in_row, 100, back.prefill) \
        == learning.learned_s(peer.ttfts, peer.rates, 64, peer.timeouts_in_row, 100, peer.prefill)
    assert back.ttft_histogram.counts == peer.ttft_histogram.counts
    # And the jobs too, oldest first
    assert jobs == [_job(1), _job(2)]


def test_the_oldest_jobs_are_pruned_on_disk_and_in_memory(tmp_path):
    path = tmp_path / "broker.sqlite3"
    store = Store(path, keep=3)
    history = History(3)
    for i in range(7):
        store.put("job", _job(i))
        history.add(_job(i))
    store.close()
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    assert rows == 3
    again = Store(path, keep=3)
    assert [j["job"] for j in again.load()[1]] == [_job(i)["job"] for i in (4, 5, 6)]
    again.close()
    assert [j["job"] for j in history.recent(10)] == [_job(i)["job"] for i in (6, 5, 4)]
    assert len(history.recent(2)) == 2


def test_the_schema_is_versioned_and_the_file_in_wal_mode(tmp_path):
    path = tmp_path / "broker.sqlite3"
    Store(path, keep=5).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"peers", "jobs"} <= tables
    db.close()


def test_a_file_of_a_newer_schema_is_left_alone(tmp_path, caplog):
    path = tmp_path / "broker.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future (x)")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    store = Store(path, keep=5)
    assert not store.active and store.load() == ([], [])
    assert not store.put("job", _job(1))
    store.close()
    assert "newer swarm-broker" in caplog.text
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_corrupt_file_is_reported_once_and_kept_as_it_was(tmp_path, caplog):
    # Given a state file of garbage
    path = tmp_path / "broker.sqlite3"
    garbage = b"this is no database\x00" * 500
    path.write_bytes(garbage)
    # When the store opens it and records are put
    with caplog.at_level(logging.WARNING):
        store = Store(path, keep=5)
        assert store.load() == ([], [])
        assert not store.put("job", _job(1))
        store.close()
    # Then one warning names the file and what to do, and the file is untouched
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage() and "--state-dir" in warnings[0].getMessage()
    assert path.read_bytes() == garbage


def test_a_directory_that_cannot_be_made_is_reported_once(tmp_path, caplog):
    # Given a state directory under a regular file (root can write anywhere: chmod stops nobody)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        store = Store(blocker / "state" / "broker.sqlite3", keep=5)
        assert not store.put("peers", [])
        store.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(blocker / "state") in warnings[0].getMessage()


def test_a_database_that_fails_mid_run_is_reported_once_and_the_rest_dropped(tmp_path, caplog):
    # Given a store that has written a job
    store = Store(tmp_path / "broker.sqlite3", keep=5)
    store.put("job", _job(1))
    _written(store, 1)
    # When its connection breaks under the writer
    store._db.db.close()
    with caplog.at_level(logging.WARNING):
        store.put("job", _job(2))
        for _ in range(2000):
            if store.failed:
                break
            time.sleep(0.01)
        kept = [store.put("job", _job(i)) for i in range(3, 6)]
        store.close()
    # Then it said so once, and takes nothing more
    assert store.failed and not any(kept)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot keep the broker's state" in warnings[0].getMessage()


def test_a_full_queue_drops_and_counts_and_says_so_once(tmp_path, caplog):
    # Given a store whose writer waits on another process's lock, with room for one record
    path = tmp_path / "broker.sqlite3"
    store = Store(path, keep=100, queue_items=1)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    # When records come faster than it can write them
    with caplog.at_level(logging.WARNING):
        kept = [store.put("job", _job(i)) for i in range(4)]
    other.execute("ROLLBACK")
    other.close()
    store.close()
    # Then some were dropped, counted, and said once; the loop never waited
    assert not all(kept) and store.stats["dropped"] == kept.count(False)
    assert sum("falls behind" in r.getMessage() for r in caplog.records) == 1


def test_restore_trusts_no_value_read_back():
    bad = {"requests": -3, "successes": "7", "ttfts": [0.1, float("nan")], "rates": "fast",
           "busy_s": float("inf"), "last_error": 5, "ttft_histogram": {"bounds": [1, 2]},
           "wins": True, "tokens": 12}
    m = peer_state.restore(bad)
    assert (m.requests, m.successes, m.wins, m.tokens) == (0, 0, 0, 12)
    assert not m.ttfts and not m.rates and m.busy_s == 0.0 and m.last_error is None
    assert peer_state.restore("not a map").to_map() == PeerMetrics().to_map()
    assert not valid_record({"job": 1}) and valid_record(json.loads(json.dumps(_job(1))))


def test_restored_peers_come_back_in_their_order():
    book = MetricsBook()
    book.restore("old", PeerMetrics(requests=1))
    book.restore("new", PeerMetrics(requests=2))
    assert [name for name, _ in book.ordered()] == ["old", "new"]
    assert book.peer("old").requests == 1


@pytest.mark.parametrize("limit", [0, -1, 1001, "5", 2.5, True])
def test_a_bad_history_limit_is_one_clear_error(limit):
    with pytest.raises(BodyError, match="'limit'"):
        limit_of({"limit": limit})
    assert limit_of({}) == 20 and limit_of({"limit": 7}) == 7


def test_the_history_table_shows_odd_values_as_question_marks():
    from client.history_view import history_lines
    odd = {"job": "abc\x1b[2J", "at": "soon", "strategy": 5, "winner": None, "outcome": "failed",
           "candidates": [{"ok": True}, "x"], "total_s": float("nan")}
    lines = history_lines([odd, _job(1)])
    assert lines[0].split()[:3] == ["time", "job", "strategy"]
    assert "(failed)" in lines[1] and "1/2" in lines[1] and "\x1b" not in lines[1]
    assert "gpu" in lines[2] and "1/1" in lines[2] and lines[2].endswith("0.50")
    assert history_lines([]) == ["no jobs yet"]


def test_a_record_nested_past_what_json_decodes_is_skipped_not_fatal(tmp_path):
    # Given a state file whose job row and peer row nest deeper than json can decode
    path = tmp_path / "broker.sqlite3"
    Store(path, keep=5).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO jobs (job, at, record) VALUES ('x', 0, ?)", ("[" * 100_000,))
    db.execute("INSERT INTO peers VALUES ('gpu', 0, ?)", ("{\"a\":" * 100_000,))
    db.commit()
    db.close()
    # When the broker reads it back, then the odd rows read as nothing and the file stays kept
    store = Store(path, keep=5)
    assert store.load() == ([("gpu", None)], [None]) and store.active
    store.close()


def test_a_count_too_big_to_send_is_not_restored():
    # Given kept metrics whose counts no broker could have reached (msgpack stops at 64 bits)
    from common.codec import pack
    huge = 10**30
    hist = {"bounds": list(peer_state.TTFT_BUCKETS_S), "counts": [huge] + [0] * 10,
            "sum": 1.0, "count": huge}
    m = peer_state.restore({"requests": huge, "tokens": huge, "wins": 2, "ttft_histogram": hist})
    # Then they are left at their defaults, and swarm.status can still send the peer's map
    assert (m.requests, m.tokens, m.wins, m.ttft_histogram.count) == (0, 0, 2, 0)
    pack(m.to_map())


def test_a_kept_error_is_cut_to_what_a_live_one_may_be():
    from common.bodies import MAX_ERROR
    m = peer_state.restore({"last_error": "x" * 10_000_000, "last_error_at": 1.0})
    assert m.last_error == "x" * MAX_ERROR and m.last_error_at == 1.0


@pytest.mark.parametrize("odd", [
    {"tokens": 10**30},                       # msgpack cannot send it: swarm.history failed
    {"ttft_s": float("nan")},
    {"error": "x" * 10_000_000},              # every reply that holds it swells
    {"peer": ["a", ["b"]]},
    {"extra": [[[[]]]]},
])
def test_a_kept_job_is_restored_only_as_a_record_could_be_made(odd):
    rec = _job(1)
    rec["candidates"][0].update(odd)
    assert not valid_record(rec)
    assert not valid_record({**_job(1), "nested": [[[]]] * 3}) and valid_record(_job(2))
    assert not valid_record({**_job(1), "candidates": [_job(1)["candidates"][0]] * 100_000})


def test_a_kept_peer_name_no_worker_could_have_is_not_restored(tmp_path):
    from broker.keeper import Keeper
    path = tmp_path / "broker.sqlite3"
    store = Store(path, keep=5)
    store.put("peers", [("x" * 1_000_000, {}), ("gpu", {"requests": 2})])
    store.close()
    book = MetricsBook()
    Keeper(Store(path, keep=5), book, History(5)).load()
    assert book.names() == ["gpu"] and book.peer("gpu").requests == 2
