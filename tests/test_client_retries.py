"""The client's lazy pirate, as pure logic: Link fed with monitor events, Retries deciding
whether a failed attempt is sent again; then the library against a raw broker that drops
the first request (a real socket, no model)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import zmq

from client.client import SwarmClient
from client.link import RETRY_PAUSE_MAX_S, RETRY_PAUSE_S, Link, Retries
from common import frames as F
from common.bodies import GenerateRequest, Sampling
from common.codec import pack
from common.errors import RequestFailed
from common.messages import ClientReply, decode_client, split_envelope
from tests.conftest import run
from tests.wire import serving

pytestmark = pytest.mark.timeout(30)

BROKER = "tcp://127.0.0.1:7555"
UP, DOWN = zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_DISCONNECTED


def link(connected: bool = False, lost: bool = False, back: bool = False) -> Link:
    out = Link(BROKER, start=0.0, connect_s=5.0, reply_s=60.0)
    if connected:
        out.on_event(UP, 1.0)
    if lost:
        out.on_event(DOWN, 2.0)
    if back:
        out.on_event(UP, 3.0)
    return out


def test_a_broker_never_reached_is_not_tried_again():
    retries = Retries(3)
    assert retries.pause_after(link()) is None
    assert retries.gave_up(link()).startswith(f"the broker at {BROKER} could not be reached")


def test_a_lost_broker_is_tried_again_with_a_doubling_pause_up_to_the_limit():
    retries = Retries(3)
    lost = link(connected=True, lost=True)
    assert retries.pause_after(lost) == RETRY_PAUSE_S
    assert retries.note(lost) == f"lost the broker at {BROKER} mid-request; retrying (1/3)"
    # a retry that cannot reach it (the broker is still restarting) uses a retry too
    assert retries.pause_after(link()) == 2 * RETRY_PAUSE_S
    assert retries.pause_after(link()) == min(RETRY_PAUSE_MAX_S, 4 * RETRY_PAUSE_S)
    assert retries.pause_after(lost) is None
    assert retries.gave_up(link()).endswith("(gave up after 3 retries)")


def test_a_silent_broker_is_tried_again_and_a_broker_back_without_the_request_at_once():
    silent = link(connected=True)
    assert silent.deadline() == 60.0
    assert "sent no final answer within 60 s" in silent.failure()
    assert Retries(1).pause_after(silent) == RETRY_PAUSE_S
    back = link(connected=True, lost=True, back=True)
    assert back.deadline() == 2.0  # the new broker does not know the request: go now
    assert Retries(1).pause_after(back) == RETRY_PAUSE_S


def test_no_retries_means_the_first_failure_is_the_answer():
    retries = Retries(0)
    lost = link(connected=True, lost=True)
    assert retries.pause_after(lost) is None
    assert retries.gave_up(lost) == f"lost the broker at {BROKER} mid-request"


class ForgetfulBroker:
    """A raw ROUTER that restarts (closes and binds again) instead of answering the first
    request, then answers: MMI says 404 the first time (the workers are not back yet) and
    200 after; other services get `final`."""

    def __init__(self, ctx, final: dict):
        self.ctx, self.final = ctx, final
        self.sock = self._bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests: list[bytes] = []

    def _bind(self, endpoint: str):
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        return sock

    async def serve(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            request = decode_client(split_envelope(frames[1:])[1])
            self.requests.append(request.service)
            if len(self.requests) == 1:  # the first request dies with its broker
                self.sock.close(linger=0)
                await asyncio.sleep(0.3)
                self.sock = self._bind(self.endpoint)
                continue
            if request.service == F.MMI_SERVICE:
                body = b"200" if F.MMI_SERVICE in self.requests[:-1] else b"404"
            else:
                body = pack(self.final)
            reply = ClientReply(request.service, (body,), True).to_frames()
            await self.sock.send_multipart([frames[0], *reply])


@contextlib.asynccontextmanager
async def forgetful(ctx, final: dict):
    broker = ForgetfulBroker(ctx, final)
    try:
        async with serving(broker.serve()):
            yield broker
    finally:
        broker.sock.close(linger=0)


def test_the_library_sends_a_request_again_after_the_broker_is_lost(ctx):
    async def body():
        notes: list[str] = []
        async with forgetful(ctx, {"peers": []}) as broker:
            client = SwarmClient(broker.endpoint, ctx, retries=2, on_retry=notes.append)
            status = await client.status(timeout_s=20.0)
        assert status == {"peers": []}
        assert broker.requests == [F.SERVICE_STATUS, F.SERVICE_STATUS]  # no MMI for its own
        assert len(notes) == 1 and notes[0].startswith(f"lost the broker at {broker.endpoint}")
        assert notes[0].endswith("retrying (1/2)")
    run(body(), 25.0)


def test_a_retry_waits_until_the_restarted_broker_offers_the_service_again(ctx):
    async def body():
        final = {"winner": {"cand": 0, "peer": "w", "text": "4"}, "candidates": []}
        async with forgetful(ctx, final) as broker:
            request = GenerateRequest(Sampling(prompt="2+2="), candidates=1)
            result = await SwarmClient(broker.endpoint, ctx).generate(request, 20.0)
        assert result["winner"]["text"] == "4"
        assert broker.requests == [F.SERVICE_GENERATE, F.MMI_SERVICE, F.MMI_SERVICE,
                                   F.SERVICE_GENERATE]
    run(body(), 25.0)


def test_the_library_with_retries_off_fails_on_the_first_loss(ctx):
    async def body():
        async with forgetful(ctx, {"peers": []}) as broker:
            with pytest.raises(RequestFailed, match="lost the broker"):
                await SwarmClient(broker.endpoint, ctx, retries=0).status(timeout_s=20.0)
        assert broker.requests == [F.SERVICE_STATUS]
    run(body(), 25.0)


@pytest.mark.parametrize("error, said", [
    ("no peer\x1b[2J\u202e took it", "no peer[2J took it"),  # escapes and bidi go
    (None, "the broker sent an error without a text"),
    (5, "the broker sent an error without a text"),
    ("x" * 10**6, None),                                     # cut for the screen
])
def test_an_error_the_broker_sends_is_one_clean_line(error, said):
    from client.client import _map
    with pytest.raises(RequestFailed) as e:
        _map((pack({"error": error}),), check=True)
    assert str(e.value) == said if said else len(str(e.value)) <= 4096
