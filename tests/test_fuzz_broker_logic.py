"""The broker's message handling under any sequence of hostile messages, no sockets: the
real `Broker.handle` and housekeeping, driven by hypothesis, read through its outbox.

Whatever arrives, in whatever order, from whichever identity: nothing raises inside the
broker (`errors` stays 0), and every `generate` request it accepted ends in exactly one
FINAL to the identity that sent it, none lost, none duplicated.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from broker.server import Broker, BrokerConfig
from common import frames as F
from common.bodies import GenerateRequest, Sampling
from common.codec import pack, unpack
from common.errors import BodyError, ProtocolError
from common.messages import ClientReply, ClientRequest, decode
from common.profile import WorkerProfile
from tests.fuzz_values import SCHEMAS, hostile_bodies

pytestmark = pytest.mark.timeout(120)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

W1, W2, C, S = b"\x00w1", b"\x00w2", b"\x00c", b"\x00s"
JOB = "job1"  # the job id in drawn replies: swapped for what the sender works on then
GOOD = GenerateRequest(Sampling(prompt="2+2=", max_tokens=4), candidates=2, model="m").to_map()


def _schemas(*names: str):
    return st.sampled_from([s for s in SCHEMAS if s[0] in names])


bodies = {kind: hostile_bodies(_schemas(*names)).map(lambda case: pack(case[1])) | st.binary()
          for kind, names in (("request", ("GenerateRequest", "GenerateRequest(prompt)")),
                              ("reply", ("Chunk", "Outcome", "Outcome(error)")),
                              ("profile", ("WorkerProfile",)))}
wire_ints = st.integers(-2**63, 2**64 - 1)  # every integer msgpack can carry
limits = st.builds(lambda v: pack({"limit": v}),  # swarm.history's one field, as strangers spell it
                   st.none() | st.booleans() | wire_ints | st.floats()
                   | st.text(max_size=8) | st.lists(wire_ints, max_size=2))
client_requests = st.builds(
    lambda delim, service, body: delim + [F.CLIENT, F.C_REQUEST, service, *body],
    st.sampled_from([[], [b""]]),
    st.sampled_from([F.SERVICE_GENERATE, F.SERVICE_GENERATE, F.SERVICE_CANCEL,
                     F.SERVICE_STATUS, F.SERVICE_HISTORY, F.MMI_SERVICE, b"echo"]),
    st.lists(st.just(pack(GOOD)) | bodies["request"] | limits, max_size=2))
worker_replies = st.builds(lambda cmd, client, body: [F.WORKER, cmd, client, b"", body],
                           st.sampled_from([F.W_PARTIAL, F.W_FINAL]),
                           st.sampled_from([C, S, b"other"]), bodies["reply"])
readies = st.builds(lambda body: [F.WORKER, F.W_READY, F.SERVICE_GENERATE, body],
                    bodies["profile"])
others = st.lists(st.sampled_from([F.CLIENT, F.WORKER, b"", *F.WORKER_COMMAND_NAMES,
                                   b"generate", C]) | st.binary(max_size=12), max_size=5)
actions = st.lists(st.tuples(st.sampled_from([W1, W2, C, S]),
                             client_requests | worker_replies | readies | others)
                   | st.floats(0.0, 5.0), max_size=40)


class Driven:
    """A broker with no socket: messages in through `handle`, everything out collected."""

    def __init__(self) -> None:
        self.broker = Broker(BrokerConfig(heartbeat_s=0.5, timeout_s=3.0))
        self.now = 1000.0
        self.sent: list[list[bytes]] = []
        self.accepted: Counter[bytes] = Counter()  # generate requests per identity

    def send(self, identity: bytes, frames: list[bytes]) -> None:
        frames = self._with_running_job(identity, frames)
        try:
            _, msg = decode(frames)
        except ProtocolError:
            msg = None
        if isinstance(msg, ClientRequest) and msg.service == F.SERVICE_GENERATE:
            self.accepted[identity] += 1
        self.broker.handle([identity, *frames], self.now)
        self.collect()

    def _with_running_job(self, identity: bytes, frames: list[bytes]) -> list[bytes]:
        """A drawn reply names JOB; make it name the job and candidate its sender works on
        (or, if none, a job that runs), so it reaches the candidate logic."""
        slot = self.broker.registry.get(identity)
        jobs = list(self.broker.generate.jobs)
        if not jobs or len(frames) != 5 or frames[0] != F.WORKER:
            return frames
        try:
            m = unpack(frames[4])
        except BodyError:
            return frames
        if m.get("job") == JOB:
            m["job"], cand = slot.job if slot is not None and slot.job else (jobs[0], None)
            m["cand"] = cand if cand is not None and m.get("cand") == 2 else m.get("cand")
        return frames[:4] + [pack(m)]

    def tick(self, dt: float) -> None:
        self.now += dt
        self.broker.housekeeping(self.now)
        self.collect()

    def collect(self) -> None:
        self.sent += [env.frames for env in self.broker.outbox.drain()]

    def finish(self) -> None:
        """Let every job end: time runs on until nothing is left, votes included."""
        for _ in range(500):
            if not self.broker.generate.jobs and not self.broker.generate.busy:
                return
            self.tick(10.0)
            time.sleep(0.002)  # a vote may be counted in the voter's thread
        raise AssertionError(f"jobs never ended: {list(self.broker.generate.jobs)}")

    def finals(self) -> Counter[bytes]:
        out: Counter[bytes] = Counter()
        for identity, *frames in self.sent:
            try:
                _, msg = decode(frames)
            except ProtocolError:
                continue
            if isinstance(msg, ClientReply) and msg.final and msg.service == F.SERVICE_GENERATE:
                out[identity] += 1
        return out


def _profile(name: str) -> bytes:
    return WorkerProfile(name=name, node_id=name, model="m", seed_variation=True,
                         cancel=True).to_frame()


@FUZZ
@given(actions)
def test_no_sequence_of_messages_breaks_the_broker_or_loses_a_final(steps):
    d = Driven()
    try:
        d.send(W1, [F.WORKER, F.W_READY, F.SERVICE_GENERATE, _profile("w1")])
        d.send(W2, [F.WORKER, F.W_READY, F.SERVICE_GENERATE, _profile("w2")])
        d.send(C, [F.CLIENT, F.C_REQUEST, F.SERVICE_GENERATE, pack(GOOD)])
        for step in steps:
            if isinstance(step, float):
                d.tick(step)
            else:
                d.send(*step)
        d.finish()
        assert d.broker.stats["errors"] == 0
        assert d.finals() == d.accepted, "a generate request did not end in exactly one FINAL"
        info = d.broker._broker_info(d.now)
        refused = sum(info["rejected"].values())
        assert refused >= info["malformed"]  # every malformed message is among the refusals
    finally:
        d.broker.voter.shutdown(wait=True)
