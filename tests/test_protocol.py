"""Wire framing (common/messages.py), msgpack bodies (codec, bodies) and the worker profile."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, strategies as st

from common import frames as F
from common.bodies import Chunk, GenerateRequest, Outcome, Sampling, Task
from common.codec import field, number, pack, unpack, unpack_body
from common.errors import BodyError, ProtocolError
from common.hardware import Gpu, Hardware
from common.messages import (Cancel, ClientReply, ClientRequest, Disconnect, Heartbeat, Ready,
                             WorkerReply, WorkerRequest, decode, decode_client, decode_worker)
from common.profile import WorkerProfile

pytestmark = pytest.mark.timeout(10)

CLIENT_MESSAGES = [
    ClientRequest(b"generate", (b"body",)),
    ClientRequest(b"echo", ()),
    ClientReply(b"generate", (b"a", b"b"), final=False),
    ClientReply(b"generate", (b"done",), final=True),
]
WORKER_MESSAGES = [
    Ready(b"generate"),
    Ready(b"generate", b"\x80"),
    WorkerRequest(b"client-1", (b"task",)),
    WorkerRequest(b"client-1", (b"", b"x")),  # a body that itself starts with an empty frame
    WorkerReply(b"client-1", (b"chunk",), final=False),
    WorkerReply(b"client-1", (b"outcome",), final=True),
    Heartbeat(),
    Disconnect(),
    Cancel(b"client-1"),
]


# -- framing -------------------------------------------------------------------------------
@pytest.mark.parametrize("msg", CLIENT_MESSAGES + WORKER_MESSAGES, ids=repr)
def test_every_message_round_trips_with_and_without_delimiter(msg):
    assert decode(msg.to_frames()) == (False, msg)
    assert decode([b"", *msg.to_frames()]) == (True, msg)


@pytest.mark.parametrize("msg", CLIENT_MESSAGES, ids=repr)
def test_decode_client_round_trip(msg):
    assert decode_client(msg.to_frames()) == msg


@pytest.mark.parametrize("msg", WORKER_MESSAGES, ids=repr)
def test_decode_worker_round_trip(msg):
    assert decode_worker(msg.to_frames()) == msg


@pytest.mark.parametrize("command, expected", [
    (F.W_REQUEST, WorkerRequest(b"c", (b"x", b"y"))),
    (F.W_PARTIAL, WorkerReply(b"c", (b"x", b"y"), final=False)),
    (F.W_FINAL, WorkerReply(b"c", (b"x", b"y"), final=True)),
])
def test_addressed_commands_accept_a_missing_delimiter_after_the_client(command, expected):
    assert decode_worker([F.WORKER, command, b"c", b"", b"x", b"y"]) == expected
    assert decode_worker([F.WORKER, command, b"c", b"x", b"y"]) == expected


service_names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                        max_size=F.MAX_SERVICE_BYTES).map(str.encode)


@given(service=service_names, body=st.lists(st.binary(max_size=64), max_size=40),
       delimited=st.booleans())
def test_any_printable_service_and_body_round_trip_through_client_request(service, body, delimited):
    msg = ClientRequest(service, tuple(body))
    frames = ([b""] if delimited else []) + msg.to_frames()
    assert decode(frames) == (delimited, msg)


@pytest.mark.parametrize("frames", [
    [],
    [b""],
    [b"MDPC01", F.C_REQUEST, b"generate"],
    [b"generate", b"body"],
    [b"", b"", F.CLIENT, F.C_REQUEST, b"generate"],  # two delimiters
], ids=repr)
def test_frames_without_a_protocol_tag_are_rejected(frames):
    with pytest.raises(ProtocolError):
        decode(frames)


@pytest.mark.parametrize("frames", [
    [F.CLIENT, b"\x09", b"generate"],
    [F.CLIENT, b"", b"generate"],
    [F.WORKER, b"\x09"],
    [F.WORKER, b"\x00", b"generate"],
], ids=repr)
def test_unknown_command_bytes_are_rejected(frames):
    with pytest.raises(ProtocolError, match="unknown"):
        decode(frames)


@pytest.mark.parametrize("service", [b"", b"has space", b"caf\xc3\xa9", b"tab\t", b"x" * 256, b"\x7f"],
                         ids=repr)
def test_bad_service_names_are_rejected(service):
    with pytest.raises(ProtocolError, match="service name"):
        decode([F.CLIENT, F.C_REQUEST, service])
    with pytest.raises(ProtocolError, match="service name"):
        decode([F.WORKER, F.W_READY, service])


def test_a_body_of_many_frames_passes_and_only_its_size_is_bounded():
    many = ClientRequest(b"echo", (b"x",) * 1000).to_frames()
    assert decode(many)[1].body == (b"x",) * 1000
    reply = WorkerReply(b"c", (b"part",) * 13, final=True).to_frames()
    assert decode_worker(reply).body == (b"part",) * 13
    # empty frames cost their overhead: a flood of them is still bounded
    flood = F.MAX_BODY_BYTES // F.FRAME_OVERHEAD_BYTES + 1
    with pytest.raises(ProtocolError, match="larger than"):
        decode([F.CLIENT, F.C_REQUEST, b"echo"] + [b""] * flood)


@pytest.mark.parametrize("frames", [
    [F.WORKER, F.W_READY],
    [F.WORKER, F.W_READY, b"generate", b"profile", b"extra"],
    [F.WORKER, F.W_CANCEL],
    [F.WORKER, F.W_CANCEL, b"c", b"extra"],
    [F.WORKER, F.W_REQUEST],
    [F.WORKER, F.W_FINAL],
    [F.CLIENT, F.C_REQUEST],
], ids=repr)
def test_commands_with_the_wrong_frame_count_are_rejected(frames):
    with pytest.raises(ProtocolError):
        decode(frames)


def test_a_body_over_the_size_limit_is_rejected():
    half = b"x" * (F.MAX_BODY_BYTES // 2 - F.FRAME_OVERHEAD_BYTES)
    assert decode([F.CLIENT, F.C_REQUEST, b"s", half, half])[1].body == (half, half)
    with pytest.raises(ProtocolError, match="larger"):
        decode([F.CLIENT, F.C_REQUEST, b"s", half, half + b"!"])
    with pytest.raises(ProtocolError, match="larger"):
        decode([F.WORKER, F.W_FINAL, b"c", b"", half, half + b"!"])


# -- codec ---------------------------------------------------------------------------------
def test_unpack_round_trips_a_map():
    m = {"a": 1, "b": [1.5, "x"], "c": {"d": None}, "e": b"\x00"}
    assert unpack(pack(m)) == m


@pytest.mark.parametrize("frame", [
    msgpack.packb([1, 2]), msgpack.packb("text"), msgpack.packb(None),
    b"\xc1", b"", b"\x82\xa1a", pack({"a": 1}) + b"\x01", msgpack.packb({1: "int key"}),
], ids=repr)
def test_unpack_rejects_anything_but_one_map(frame):
    with pytest.raises(BodyError):
        unpack(frame)


def test_unpack_rejects_oversize_frames_before_decoding():
    frame = pack({"text": "x" * 100})
    assert unpack(frame, limit=len(frame)) == {"text": "x" * 100}
    with pytest.raises(BodyError, match="limit"):
        unpack(frame, limit=len(frame) - 1)


def test_unpack_body_wants_exactly_one_frame():
    assert unpack_body((pack({"a": 1}),)) == {"a": 1}
    for body in [(), (pack({}), pack({}))]:
        with pytest.raises(BodyError):
            unpack_body(body)


@pytest.mark.parametrize("call, bad", [
    (lambda: field({}, "job", str), "job"),
    (lambda: field({"job": None}, "job", str), "job"),
    (lambda: field({"job": 3}, "job", str), "job"),
    (lambda: field({"n": True}, "n", int), "n"),
    (lambda: number({"t": True}, "t", 0, 2), "t"),
    (lambda: number({"t": 2.5}, "t", 0, 2), "t"),
    (lambda: number({"k": 1.0}, "k", 0, 9, integer=True), "k"),
    (lambda: number({"k": "3"}, "k", 0, 9, integer=True), "k"),
])
def test_field_and_number_name_the_bad_field(call, bad):
    with pytest.raises(BodyError) as info:
        call()
    assert info.value.field == bad
    assert f"'{bad}'" in str(info.value)


def test_field_and_number_accept_good_values_and_defaults():
    assert field({"flag": True}, "flag", bool) is True
    assert field({}, "x", str, "dflt") == "dflt"
    assert number({"t": 1}, "t", 0, 2) == 1.0 and isinstance(number({"t": 1}, "t", 0, 2), float)
    assert number({}, "t", 0, 2, None) is None
    assert number({"k": 9}, "k", 0, 9, integer=True) == 9


# -- bodies --------------------------------------------------------------------------------
def _req(**kw):
    return GenerateRequest.from_map({"prompt": "2+2=", **kw})


def test_generate_request_defaults_and_unknown_keys_ignored():
    req = _req(future_option={"x": 1})
    assert (req.candidates, req.strategy, req.stream, req.seed, req.timeout_s) == \
        (3, "auto", "progress", None, None)
    assert req.sampling == Sampling(prompt="2+2=")


def test_generate_request_takes_messages_instead_of_prompt():
    req = GenerateRequest.from_map({"messages": [{"role": "user", "content": "hi"},
                                                 {"role": "assistant"}]})
    assert req.sampling.prompt is None
    assert req.sampling.messages == ({"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": ""})


@pytest.mark.parametrize("m, bad", [
    ({}, "messages"),
    ({"prompt": "p", "messages": [{"role": "user", "content": "c"}]}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "c"}]}, "messages"),
    ({"messages": ["hello"]}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages"),
    ({"prompt": "p", "strategy": "loudest"}, "strategy"),
    ({"prompt": "p", "stream": "sometimes"}, "stream"),
    ({"prompt": "p", "candidates": 0}, "candidates"),
    ({"prompt": "p", "candidates": 65}, "candidates"),
    ({"prompt": "p", "candidates": True}, "candidates"),
    ({"prompt": "p", "max_tokens": False}, "max_tokens"),
    ({"prompt": "p", "temperature": True}, "temperature"),
    ({"prompt": "p", "temperature": 2.1}, "temperature"),
    ({"prompt": "p", "seed": -1}, "seed"),
    ({"prompt": "p", "timeout_s": True}, "timeout_s"),
    ({"prompt": "p", "stop": ["ok", ""]}, "stop"),
    ({"prompt": 7}, "prompt"),
    ({"prompt": "p", "temperature_spread": 2.5}, "temperature_spread"),
    ({"prompt": "p", "temperature_spread": "wide"}, "temperature_spread"),
    ({"prompt": "p", "greedy": 1}, "greedy"),
    ({"prompt": "p", "quorum": "yes"}, "quorum"),
    ({"prompt": "p", "logprobs": 0}, "logprobs"),
], ids=repr)
def test_generate_request_rejects_bad_fields_by_name(m, bad):
    with pytest.raises(BodyError) as info:
        GenerateRequest.from_map(m)
    assert info.value.field == bad


def test_the_consensus_knobs_round_trip():
    req = _req(temperature_spread=0.3, greedy=True, quorum=False, logprobs=True)
    assert (req.spread, req.greedy, req.quorum, req.sampling.logprobs) == (0.3, True, False, True)
    assert GenerateRequest.from_map(req.to_map()) == req


def test_candidates_at_the_limits_are_accepted():
    assert _req(candidates=1).candidates == 1
    assert _req(candidates=64).candidates == 64


@pytest.mark.parametrize("req", [
    GenerateRequest(Sampling(prompt="p")),
    GenerateRequest(Sampling(messages=({"role": "system", "content": "s"},
                                       {"role": "user", "content": "u"}),
                             max_tokens=9, temperature=0.0, stop=("\n", "END"), top_p=0.9,
                             tools=({"type": "function", "function": {
                                 "name": "f", "description": "d", "parameters": {}}},),
                             tool_choice="required", tool_name="f"),
                    candidates=5, strategy="majority", seed=42, timeout_s=3.5, model="m",
                    stream="live"),
], ids=["minimal", "full"])
def test_generate_request_to_map_from_map_round_trip(req):
    assert GenerateRequest.from_map(unpack(pack(req.to_map()))) == req


def test_task_chunk_and_outcome_round_trip():
    task = Task("job1", 3, 2**32 - 1, Sampling(prompt="p", stop=("x",)))
    chunk = Chunk("job1", 3, 7, "tok")
    done = Outcome("job1", 3, "text", "stop", {"completion_tokens": 4}, {"ttft_s": 0.1})
    failed = Outcome("job1", 3, error="out of memory")
    for obj in (task, chunk, done, failed):
        assert type(obj).from_map(unpack(pack(obj.to_map()))) == obj
    assert "text" not in failed.to_map()


def test_task_rejects_a_seed_out_of_range():
    m = Task("j", 0, 1, Sampling(prompt="p")).to_map()
    with pytest.raises(BodyError) as info:
        Task.from_map({**m, "seed": 2**32})
    assert info.value.field == "seed"


# -- worker profile ------------------------------------------------------------------------
def test_profile_round_trips_through_its_frame():
    p = WorkerProfile(name="gpu-box", node_id="n1", host="h", backend="llama.cpp", model="m.gguf",
                      slots=2, slot=1, seed_variation=True, cancel=True, timeout_s=30.0,
                      gpu_layers=-1, swarm="lab",
                      hardware=Hardware(os="Linux", arch="x86_64", platform="linux",
                                        cores_physical=8, cores_logical=16, ram_total_mb=64000,
                                        gpus=(Gpu(0, "NVIDIA RTX 4090", 24564, 23000, "8.9"),
                                              Gpu(1, "NVIDIA RTX 3060", 12288, 11000, "8.6")),
                                        gpu_driver="550.54", gpu_offload=True))
    assert WorkerProfile.from_frame(p.to_frame(), "fallback") == p


def test_profile_without_a_frame_falls_back_to_the_given_name():
    p = WorkerProfile.from_frame(None, "abc123")
    assert (p.name, p.node_id, p.slots, p.seed_variation, p.cancel) == ("abc123", "abc123", 1, False, False)


def test_profile_fills_missing_name_and_node_id_and_ignores_unknown_keys():
    p = WorkerProfile.from_frame(pack({"backend": "mlx", "gpu": "M3", "host": None}), "fb")
    assert (p.name, p.node_id, p.backend, p.host) == ("fb", "fb", "mlx", "")


@pytest.mark.parametrize("m, bad", [
    ({"slots": "2"}, "slots"),
    ({"slot": -1}, "slot"),
    ({"gpu_layers": -2}, "gpu_layers"),
    ({"hardware": {"cores_logical": True}}, "hardware.cores_logical"),
    ({"hardware": {"ram_total_mb": -1}}, "hardware.ram_total_mb"),
    ({"hardware": {"platform": "beos"}}, "platform"),
    ({"hardware": {"chip": "x" * 200}}, "chip"),
    ({"hardware": {"gpus": [{"index": 0}] * 17}}, "gpus"),
    ({"hardware": {"gpus": [{"index": 0, "vram_free_mb": 1.5}]}}, "hardware.vram_free_mb"),
    ({"hardware": {"gpus": ["rtx"]}}, "gpus"),
    ({"hardware": [1]}, "hardware"),
    ({"seed_variation": 1}, "seed_variation"),
    ({"name": ""}, "name"),
    ({"model": 3}, "model"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"timeout_s": "soon"}, "timeout_s"),
], ids=repr)
def test_profile_with_an_ill_typed_field_raises_body_error(m, bad):
    with pytest.raises(BodyError) as info:
        WorkerProfile.from_frame(pack(m), "fb")
    assert info.value.field == bad


def test_profile_frame_that_is_not_a_map_raises_body_error():
    with pytest.raises(BodyError):
        WorkerProfile.from_frame(msgpack.packb([1]), "fb")


@pytest.mark.parametrize("m", [{"hardware": {"ram_total_mb": "lots"}}, {"timeout_s": True}],
                         ids=repr)
def test_profile_rejects_unchecked_ill_typed_numbers(m):
    with pytest.raises(BodyError):
        WorkerProfile.from_frame(pack(m), "fb")


def test_from_frames_is_the_inverse_of_to_frames_and_checks_the_kind():
    from common.messages import Cancel, ClientRequest, Ready, WorkerReply
    for msg in (ClientRequest(b"generate", (b"x",)), Ready(b"generate", b"p"),
                WorkerReply(b"client", (b"body",), final=True), Cancel(b"client")):
        assert type(msg).from_frames(msg.to_frames()) == msg
        assert type(msg).from_frames([b"", *msg.to_frames()]) == msg
    with pytest.raises(ProtocolError, match="expected Ready, got Cancel"):
        Ready.from_frames(Cancel(b"c").to_frames())


@pytest.mark.parametrize("endpoint,bind,ok", [
    ("tcp://127.0.0.1:7555", False, True), ("tcp://gpu-box.local:7555", False, True),
    ("tcp://[::1]:7555", False, True), ("tcp://*:7555", True, True), ("tcp://127.0.0.1:*", True, True),
    ("tcp://*:7555", False, False), ("nonsense", False, False), ("tcp://host", False, False),
    ("tcp://host:99999", False, False), ("ipc:///tmp/swarm.sock", False, True),
])
def test_endpoint_check(endpoint, bind, ok):
    from common.endpoints import check
    from common.errors import ConfigError
    if ok:
        assert check(endpoint, bind) == endpoint
    else:
        with pytest.raises(ConfigError, match="endpoint|port|host"):
            check(endpoint, bind)


def test_a_profile_string_of_unbounded_length_is_refused():
    with pytest.raises(BodyError, match="at most 256"):
        WorkerProfile.from_frame(pack({"name": "x" * 257}), "fallback")
