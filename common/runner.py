"""Run a daemon's main coroutine until it ends or is signalled, then let it clean up.

The first SIGTERM or SIGINT asks the daemon to stop gracefully (`stop`, where it has one:
it finishes its work within its grace and returns); a second one stops it at once (its
task is cancelled, and its `finally` blocks say goodbye).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine

log = logging.getLogger(__name__)


def run_until_signalled(main: Coroutine, stop: Callable[[], None] | None = None) -> None:
    async def runner() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        signalled = []

        def on_signal(sig: signal.Signals) -> None:
            signalled.append(sig)
            if stop is not None and len(signalled) == 1:
                log.info("%s: stopping gracefully (signal again to stop at once)", sig.name)
                stop()
            else:
                if stop is not None:
                    log.info("%s again: stopping at once", sig.name)
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())
