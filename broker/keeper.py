"""What the broker keeps across restarts, between its loop and the store: pure glue.

At start it puts the kept peer metrics back into the MetricsBook (so status lists those
peers, and their learned timeouts hold, before they reconnect) and the kept jobs into the
History. While it runs, each ended job goes to the History and the store, and the peers'
metrics are snapshotted every SNAPSHOT_S when they changed, and once more on `close`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from broker import history, peer_state
from broker.history import History
from broker.jobs import Job
from broker.metrics import MetricsBook
from broker.store import Store
from common import logs

log = logging.getLogger(__name__)

SNAPSHOT_S = 2.0  # the most often peer metrics are snapshotted, when they changed


class Keeper:
    def __init__(self, store: Store, metrics: MetricsBook, history_: History,
                 skip=lambda: set()) -> None:
        self.store, self.metrics, self.history = store, metrics, history_
        self.skip = skip  # names not to keep: anonymous peers, named after a passing socket
        self._due = 0.0
        self._seen: tuple | None = None

    def load(self) -> None:
        """Put what the store holds back into memory (before any peer or job is seen)."""
        peers, jobs = self.store.load()
        for name, state in peers[-self.metrics.max_peers:]:  # the most recently used
            if isinstance(name, str) and 0 < len(name) <= history.MAX_KEPT_CHARS:
                self.metrics.restore(name, peer_state.restore(state))
        records = [r for r in jobs if history.valid_record(r)]
        for rec in records:
            self.history.add(rec)
        if self.store.active:
            log.info("kept state: %d peer(s), %d job(s) from %s", len(peers), len(records),
                     self.store.path)
            self._seen = self._fingerprint()

    def job_ended(self, job: Job, body: dict[str, Any], outcome: str, now: float) -> None:
        rec = history.record(job, body, outcome, now, time.time())
        self.history.add(rec)
        if not self.store.put("job", rec) and self.store.active:
            log.debug("job record not kept", extra=logs.kv(job=job.id))

    def tick(self, now: float) -> None:
        if now < self._due or not self.store.active:
            return
        self._due = now + SNAPSHOT_S
        self._snapshot()

    def close(self) -> None:
        """The last snapshot, then the file closed (waits on the writer: at shutdown only)."""
        if self.store.active:
            self._snapshot()
        self.store.close()

    def info(self) -> dict[str, Any]:
        """For swarm.status: where the state is kept, whether it still is, what was dropped."""
        store = self.store
        return {"file": str(store.path) if store.path else None, "kept": store.active,
                "jobs": len(self.history), "dropped": store.stats["dropped"]}

    def _snapshot(self) -> None:
        seen = self._fingerprint()
        if seen == self._seen:
            return
        skip = self.skip()
        state = [(name, peer_state.snapshot(m)) for name, m in self.metrics.ordered()
                 if name not in skip]
        if self.store.put("peers", state):
            self._seen = seen

    def _fingerprint(self) -> tuple:
        """By name: a status request that touches every peer (reordering them) changes nothing."""
        return tuple((name, peer_state.fingerprint(m)) for name, m in self.metrics.items())
