"""Clients that stop reading, against a real broker process (issue 9).

A DEALER with a one-message receive queue and a 4 KB kernel buffer asks and never reads.
The broker must not block on it (it keeps answering swarm.status and serving another
client), must not grow without bound (its RSS, measured by psutil, stays under a generous
bound), and must count what it dropped. Workers are synthetic worker processes.
"""

from __future__ import annotations

import pytest

from tests.conftest import free_port, run, wait_for_peers
from tests.faults_util import synthetic
from tests.load_util import broker_stats_until, generate, non_reader, rss_mb, status_request
from tests.wire import body_of, client_final, dealer

pytestmark = pytest.mark.timeout(110)

STREAM_TOKENS = 30_000  # per candidate (at most 32,768): 150,000 progress events for 5
TOKEN_DELAY_S = 0.0005  # a paced stream: most pieces go out one PARTIAL, one event each
FLOOD = 80_000          # status requests from the stranger that never reads
# the broker keeps at most 32 MiB of progress and 64 MiB in all for one peer (delivery.py);
# beyond that, what it holds for its own work (the job's text, libzmq's queues) is slack
RSS_GROWTH_BOUND_MB = 200


def broker_with_worker(procs, name: str, *extra: str) -> tuple[str, object, float]:
    """A broker process and one synthetic worker, live: (endpoint, broker, its RSS in MB)."""
    port = free_port()
    broker = procs.broker(port)
    synthetic(procs, port, name, *extra)
    wait_for_peers(port, {name})
    return f"tcp://127.0.0.1:{port}", broker, rss_mb(broker)


async def served(ctx, endpoint: str) -> dict:
    """Another client asks a short question and gets its FINAL."""
    sock = dealer(ctx, endpoint)
    try:
        await sock.send_multipart(generate(prompt="hi", candidates=1, max_tokens=4))
        _, final = await client_final(sock, timeout_s=30.0)
        return body_of(final)
    finally:
        sock.close()


def test_a_client_that_stops_reading_a_long_stream_is_shed_and_others_are_served(procs, ctx):
    # Given a broker and a synthetic worker with 6 slots that streams up to 30,000 tokens,
    # each on its own (a paced stream, every piece sent at once: the broker merges only token
    # events that wait together)
    endpoint, broker, rss_before = broker_with_worker(
        procs, "stream", "--slots", "6", "--tokens", str(STREAM_TOKENS), "--token-delay-s",
        str(TOKEN_DELAY_S), "--stream-interval-s", "0")

    async def body():
        # When a client asks for a job of 5 long candidates with progress and never reads
        with non_reader(ctx, endpoint) as slow:
            await slow.send_multipart(generate(prompt="go", candidates=5,
                                               max_tokens=STREAM_TOKENS, strategy="first",
                                               stream="progress"))
            # Then the broker backs its events up, and sheds them past its budget, counted
            backed = await broker_stats_until(ctx, endpoint, lambda s: s["shed"] > 0)
            assert backed["backlogged"] > 0
            # and another client is served meanwhile, on the sixth slot
            answer = await served(ctx, endpoint)
            assert answer["winner"]["text"], answer
            # and when the job is over, the memory it took stays within a bound
            done = await broker_stats_until(ctx, endpoint, lambda s: s["jobs_active"] == 0)
            growth = rss_mb(broker) - rss_before
        print(f"slow reader: {done['backlogged']} backlogged, {done['shed']} shed, "
              f"{done['sent']} sent; broker RSS {rss_before:.0f} MB + {growth:.0f} MB")
        assert growth < RSS_GROWTH_BOUND_MB
        assert done.get("cut_off", 0) == 0  # progress alone never cuts a client off
    run(body(), timeout_s=100)


def test_a_stranger_that_asks_and_never_reads_is_cut_off_not_kept(procs, ctx):
    # Given a broker with a worker
    endpoint, broker, rss_before = broker_with_worker(procs, "quick", "--tokens", "4")

    async def body():
        # When a stranger sends 80,000 status requests and reads none of the answers
        with non_reader(ctx, endpoint) as stranger:
            request = status_request()
            for _ in range(FLOOD):
                await stranger.send_multipart(request)
            # Then the broker cuts it off past its hard limit and counts what it dropped
            done = await broker_stats_until(
                ctx, endpoint, lambda s: s["messages"] >= FLOOD and s.get("cut_off", 0) > 0)
            assert done["undeliverable"] > 0
            # and its memory stays within a bound, and other clients are still served
            growth = rss_mb(broker) - rss_before
            print(f"stranger: {done['messages']} messages, {done['backlogged']} backlogged, "
                  f"{done['undeliverable']} dropped, cut off {done['cut_off']}x; "
                  f"broker RSS {rss_before:.0f} MB + {growth:.0f} MB")
            assert growth < RSS_GROWTH_BOUND_MB
            answer = await served(ctx, endpoint)
            assert answer["winner"]["text"], answer
    run(body(), timeout_s=100)
