"""The broker's state on disk: peer metrics and recent jobs in SQLite, written by a thread.

The socket loop never waits on the disk: it hands records to `Store.put`, which queues them
(a full queue drops the record and counts it) for one writer thread that writes each batch
in one transaction. The file is read once, when the broker starts.

Anything wrong with the file (not a database, made by a newer version, a directory that
cannot be made or written, a write that fails mid-run) is said once, in one warning that
names the file and what to do; from then on the broker keeps its state in memory only.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

from common.errors import SwarmError

log = logging.getLogger(__name__)

FILE_NAME = "broker.sqlite3"
SCHEMA_VERSION = 1   # PRAGMA user_version; a file of a newer version is left alone
QUEUE_ITEMS = 4096   # records waiting for the writer before new ones are dropped
BATCH_ITEMS = 512    # records written in one transaction at most
CLOSE_S = 5.0        # how long closing waits for the writer to write what is queued
BUSY_S = 2.0         # how long a write waits for another process that holds the file
_SCHEMA = (
    "CREATE TABLE peers (name TEXT PRIMARY KEY, rank INTEGER NOT NULL, state TEXT NOT NULL)",
    "CREATE TABLE jobs (seq INTEGER PRIMARY KEY, job TEXT NOT NULL, at REAL NOT NULL, "
    "record TEXT NOT NULL)",
)
_STOP = object()


class StoreError(SwarmError):
    """The state file cannot be used (not ours, or of a newer version)."""


class Database:
    """The SQLite file itself. Synchronous; every method may raise sqlite3.Error or OSError."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=BUSY_S, check_same_thread=False,
                                  isolation_level=None)
        try:
            self._schema()
        except BaseException:
            self.db.close()
            raise

    def _schema(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            raise StoreError(f"it was made by a newer swarm-broker (schema {version})")
        if version == 0 and tables:
            raise StoreError("it holds tables that are not a swarm-broker's")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        if version == 0:
            with self._transaction():
                for statement in _SCHEMA:
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        return _Commit(self.db)

    def peers(self) -> list[tuple[str, Any]]:
        """(name, state) of every peer kept, least recently used first."""
        rows = self.db.execute("SELECT name, state FROM peers ORDER BY rank").fetchall()
        return [(name, _decoded(state)) for name, state in rows]

    def jobs(self, limit: int) -> list[Any]:
        """The last `limit` job records, oldest first."""
        rows = self.db.execute("SELECT record FROM jobs ORDER BY seq DESC LIMIT ?",
                               (limit,)).fetchall()
        return [_decoded(r[0]) for r in reversed(rows)]

    def write(self, peers: list[tuple[str, dict]] | None, jobs: list[dict], keep: int) -> None:
        """In one transaction: every peer's state (replacing all kept before), when given,
        and the jobs, keeping the last `keep` jobs."""
        with self._transaction():
            if peers is not None:
                self.db.execute("DELETE FROM peers")
                self.db.executemany("INSERT INTO peers VALUES (?, ?, ?)",
                                    [(n, i, json.dumps(s)) for i, (n, s) in enumerate(peers)])
            if jobs:
                self.db.executemany("INSERT INTO jobs (job, at, record) VALUES (?, ?, ?)",
                                    [(j["job"], j["at"], json.dumps(j)) for j in jobs])
                self.db.execute("DELETE FROM jobs WHERE seq <= (SELECT MAX(seq) FROM jobs) - ?",
                                (keep,))

    def close(self) -> None:
        self.db.close()


class _Commit:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _decoded(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):  # RecursionError: nested past what json decodes
        return None  # the caller skips what is not a record


class Store:
    """Peer states and job records for the disk, queued for a writer thread. With no path,
    or once the file failed, it keeps nothing (the broker's memory still does)."""

    def __init__(self, path: Path | None, keep: int, queue_items: int = QUEUE_ITEMS) -> None:
        self.path, self.keep = path, keep
        self.stats = {"dropped": 0, "written": 0}
        self.failed = False
        self._db: Database | None = None
        self._queue: queue.Queue = queue.Queue(queue_items)
        self._thread: threading.Thread | None = None
        if path is not None:
            try:
                self._db = Database(path)
            except (sqlite3.Error, OSError, StoreError) as e:
                self._fail(e)

    def load(self) -> tuple[list[tuple[str, Any]], list[Any]]:
        """What the file holds: (peers, jobs), as `Database` reads them; nothing if it fails."""
        if self._db is None:
            return [], []
        try:
            return self._db.peers(), self._db.jobs(self.keep)
        except (sqlite3.Error, OSError) as e:
            self._fail(e)
            return [], []

    @property
    def active(self) -> bool:
        return self._db is not None

    def put(self, kind: str, item: Any) -> bool:
        """Queue ("peers", [(name, state)...]) or ("job", record) for the writer; never
        blocks. False where it is not kept: no file, the file failed, or the queue is full."""
        if self._db is None:
            return False
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_loop, name="store", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait((kind, item))
        except queue.Full:
            self.stats["dropped"] += 1
            if self.stats["dropped"] == 1:
                log.warning("the writer of %s falls behind: records are dropped (counted in "
                            "swarm.status as broker.state.dropped)", self.path)
            return False
        return True

    def close(self, timeout_s: float = CLOSE_S) -> None:
        """Write what is queued (waiting at most `timeout_s`), then close the file."""
        if self._thread is not None:
            try:
                self._queue.put((_STOP, None), timeout=timeout_s)
            except queue.Full:
                log.warning("closing %s: the writer is stuck; what it has not written is lost",
                            self.path)
            self._thread.join(timeout_s)
            self._thread = None
        elif self._db is not None:
            self._db.close()
        self._db = None

    def _write_loop(self) -> None:
        db = self._db
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH_ITEMS and batch[-1][0] is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1][0] is _STOP
            if db is not None:
                db = self._write(db, [item for item in batch if item[0] is not _STOP])
            if stop:
                if db is not None:
                    db.close()
                return

    def _write(self, db: Database, batch: list[tuple[str, Any]]) -> Database | None:
        peers = [item for kind, item in batch if kind == "peers"]
        jobs = [item for kind, item in batch if kind == "job"]
        try:
            db.write(peers[-1] if peers else None, jobs, self.keep)
        except (sqlite3.Error, OSError, ValueError) as e:
            self._fail(e)
            try:
                db.close()
            except sqlite3.Error:
                pass
            return None
        self.stats["written"] += len(batch)
        return db

    def _fail(self, e: BaseException) -> None:
        self._db = None
        if self.failed:
            return
        self.failed = True
        log.warning("cannot keep the broker's state in %s (%s): peer metrics and job history "
                    "stay in memory only until the broker restarts; move the file away or "
                    "give --state-dir a writable directory (off: keep nothing on disk)",
                    self.path, e)
