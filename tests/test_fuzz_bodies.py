"""Properties of everything that reads a peer's bytes: framing, the codec and the bodies.

Any bytes give a value or a ProtocolError (BodyError is one), never another exception; what
we accept we can send on unchanged; a frame never makes the codec build more than it holds.
"""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from common import frames as F
from common.bodies import GenerateRequest, Task
from common.codec import MAX_DEPTH, MAX_ITEMS, check_shape, pack, unpack
from common.errors import BodyError, ProtocolError
from common.messages import decode
from common.profile import WorkerProfile
from common.tool_calls import MAX_SCHEMA_DEPTH
from tests.fuzz_values import SCHEMAS, hostile_bodies, values

pytestmark = pytest.mark.timeout(60)
FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _nested(depth: int) -> bytes:
    return b"\x81\xa1k" * depth + b"\xc0"


# -- the codec --------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=256))
@example(b"\xdd\xff\xff\xff\xff")        # an array that claims 2^32 elements
@example(b"\xdf\xff\xff\xff\xff")        # a map that claims 2^32 pairs
@example(b"\xdb\xff\xff\xff\xff")        # a str that claims 4 GiB
@example(b"\xc6\xff\xff\xff\xff")        # bin, the same
@example(b"\xd4\x01\x00")                # an ext type
@example(b"\x91" * 200 + b"\xc0")        # deep nesting
def test_any_bytes_unpack_to_a_map_or_a_body_error(frame):
    try:
        assert isinstance(unpack(frame), dict)
    except BodyError:
        pass


@FUZZ
@given(values)
def test_any_value_msgpack_carries_passes_the_shape_check_as_msgpack_reads_it(value):
    frame = msgpack.packb(value, use_bin_type=True)
    check_shape(frame)
    if isinstance(value, dict):  # compared packed: NaN is not equal to itself
        assert pack(unpack(frame)) == pack(msgpack.unpackb(frame, raw=False))


@FUZZ
@given(values, st.data())
def test_a_cut_or_bent_body_is_a_body_error_or_a_map(value, data):
    frame = pack({"x": value})
    cut = data.draw(st.integers(0, len(frame)))
    flip = data.draw(st.integers(0, len(frame) - 1))
    for bad in (frame[:cut], frame[:flip] + bytes([frame[flip] ^ 0xff]) + frame[flip + 1:]):
        try:
            assert isinstance(unpack(bad), dict)
        except BodyError:
            pass


@pytest.mark.parametrize("name, frame", [
    # a tiny frame that claims a 2^32-element array or map, or a 4 GiB str or bin
    ("array32", b"\x81\xa1k\xdd\xff\xff\xff\xff"),
    ("map32", b"\x81\xa1k\xdf\xff\xff\xff\xff"),
    ("str32", b"\x81\xa1k\xdb\xff\xff\xff\xff"),
    ("bin32", b"\x81\xa1k\xc6\xff\xff\xff\xff"),
    ("deep", _nested(MAX_DEPTH + 1)),
    ("very deep", _nested(100_000)),
    # 16 MiB of empty arrays: msgpack alone builds ~1 GiB of lists from this
    ("empty arrays", b"\x81\xa1k\xdd" + struct.pack(">I", 16_000_000) + b"\x90" * 16_000_000),
    ("nils", b"\x81\xa1k\xdd" + struct.pack(">I", 16_000_000) + b"\xc0" * 16_000_000),
    ("ext", b"\x81\xa1k\xd4\x01\x00"),
])
def test_a_msgpack_bomb_is_refused_before_anything_is_built(name, frame):
    with pytest.raises(BodyError) as info:
        unpack(frame)
    assert "msgpack" in str(info.value) or "objects" in str(info.value) \
        or "deeper" in str(info.value)


def test_the_bounds_let_real_bodies_through():
    assert unpack(_nested(MAX_DEPTH - 1))
    chat = [{"role": "user", "content": f"turn {i}"} for i in range(MAX_ITEMS // 6)]
    assert GenerateRequest.from_map(unpack(pack({"messages": chat}))).sampling.messages[-1] \
        == chat[-1]
    big = "x" * (F.MAX_BODY_BYTES - 64)
    assert unpack(pack({"prompt": big}))["prompt"] == big


# -- the bodies -------------------------------------------------------------------------------
@FUZZ
@given(hostile_bodies())
def test_a_body_with_any_field_of_any_type_is_read_or_refused_by_name(case):
    (name, read), body = case
    try:
        value = read(body)
    except BodyError as e:
        assert str(e), name
        return
    # what we accept we can send on, and it reads back as the same message
    sent = value.to_map()
    assert read(unpack(pack(sent))).to_map() == sent, name


@pytest.mark.parametrize("name, body, read", SCHEMAS, ids=[s[0] for s in SCHEMAS])
def test_every_schema_round_trips(name, body, read):
    value = read(unpack(pack(body)))
    assert read(unpack(pack(value.to_map()))) == value


@FUZZ
@given(st.sampled_from(SCHEMAS), st.data())
def test_a_body_missing_any_field_is_read_or_refused(schema, data):
    _, body, read = schema
    key = data.draw(st.sampled_from(sorted(body)))
    try:
        read({k: v for k, v in body.items() if k != key})
    except BodyError as e:
        assert e.field is not None or "exactly one" in str(e) or "profile" in str(e)


def test_a_tool_schema_too_deep_to_pass_on_is_refused_at_the_door():
    """The HTTP side reads JSON of any depth; a request it accepts must reach a worker, so
    the depth a Task may not carry is refused in the request, by name."""
    deep: dict = {}
    for _ in range(MAX_DEPTH):
        deep = {"a": deep}
    with pytest.raises(BodyError) as info:
        GenerateRequest.from_map({"prompt": "p", "tools": [
            {"type": "function", "function": {"name": "f", "parameters": deep}}]})
    assert info.value.field == "tools" and "deeper" in str(info.value)


def test_a_task_passes_on_any_tool_schema_the_codec_accepts():
    deep: dict = {}
    for _ in range((MAX_SCHEMA_DEPTH - 1) // 2):  # two maps a level: as deep as may be sent
        deep = {"type": "object", "properties": {"x": deep}}
    body = Task("j", 0, 1, GenerateRequest.from_map(
        {"prompt": "p", "tools": [{"type": "function", "function": {
            "name": "f", "parameters": deep}}]}).sampling).to_map()
    assert Task.from_map(unpack(pack(body))).sampling.tools[0]["function"]["parameters"] == deep


# -- framing ----------------------------------------------------------------------------------
frame_lists = st.lists(st.binary(max_size=16) | st.sampled_from(
    [F.CLIENT, F.WORKER, b"", b"generate", *F.WORKER_COMMAND_NAMES, b"\x00", b"\x08"]),
    max_size=8)


@FUZZ
@given(frame_lists)
def test_any_frames_decode_to_a_message_or_a_protocol_error(frames):
    try:
        delimited, message = decode(frames)
    except ProtocolError:
        return
    assert delimited == (frames[0] == b"")
    assert decode(message.to_frames()) == (False, message)  # and it frames back the same


@FUZZ
@given(st.binary(max_size=64) | values.map(lambda v: pack({"k": v})))
def test_any_ready_profile_frame_is_a_profile_or_a_body_error(frame):
    try:
        profile = WorkerProfile.from_frame(frame, "fallback")
    except BodyError:
        return
    assert WorkerProfile.from_frame(profile.to_frame(), "x") == profile
