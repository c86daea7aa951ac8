"""Jobs waiting for slots, fairly: the job that has started the fewest candidates goes
first, then the oldest. A new one-candidate job thus overtakes the second candidate of an
earlier 64-candidate job, and no job waits behind another's whole fan-out."""

from __future__ import annotations

import heapq
import itertools

from broker.jobs import Job


class Rotation:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []  # (started, arrival, job id)
        self._order = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, job: Job) -> None:
        """Queue the job at its current share, once: a job already queued stays put."""
        if not job.queued:
            job.queued = True
            heapq.heappush(self._heap, (job.started, next(self._order), job.id))

    def pop(self, jobs: dict[str, Job]) -> Job | None:
        """The next job's turn; None for a job that has ended meanwhile."""
        job = jobs.get(heapq.heappop(self._heap)[2])
        if job is not None:
            job.queued = False
        return job
