"""State a stranger could make the broker keep forever, bounded (issue 9): pure logic."""

from __future__ import annotations

import pytest

from tests.test_generate_logic import CLIENT, Swarm

pytestmark = pytest.mark.timeout(60)


def test_jobs_that_end_early_leave_no_timers_behind():
    """Found by review: each job's deadline timer stayed in the heap until the deadline came,
    even after the job ended; jobs of timeout_s 86400 cancelled at once piled up for a day."""
    s = Swarm()
    s.add(b"a", cancel=True)
    for i in range(5000):
        now = float(i)
        s.submit(now, candidates=1, timeout_s=86400.0)
        s.service.cancel_client(CLIENT, now)
        s.reply(b"a", now, "late")  # the cancelled candidate's FINAL frees the slot
        s.service.tick(now)
        s.sent()
    assert not s.service.jobs
    assert len(s.service.timers) < 2000
