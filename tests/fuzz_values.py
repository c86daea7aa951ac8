"""Hypothesis strategies for hostile input: any msgpack value, and the real body schemas
with one field (at any depth) replaced by anything at all."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from common.bodies import Chunk, GenerateRequest, Outcome, Sampling, Task
from common.codec import pack
from common.hardware import Gpu, Hardware
from common.profile import WorkerProfile

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | text | st.binary(max_size=24))
# any value msgpack can carry (map keys are strings, as strict_map_key wants)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(text, inner, max_size=4), max_leaves=16)

TOOL = {"type": "function", "function": {"name": "add", "description": "adds",
                                          "parameters": {"type": "object", "properties": {
                                              "a": {"type": "number"}}}}}
SAMPLING = Sampling(messages=({"role": "system", "content": "s"}, {"role": "user", "content": "u"}),
                    max_tokens=9, temperature=0.5, stop=("\n",), top_p=0.9, tools=(TOOL,),
                    tool_choice="required", tool_name="add", logprobs=True)
PROFILE = WorkerProfile(name="w", node_id="n", host="h", backend="b", model="m", slots=2, slot=1,
                        seed_variation=True, cancel=True, timeout_s=3.0, heartbeat_s=0.2,
                        n_ctx=512, hardware=Hardware(os="Linux", arch="x86_64", platform="linux",
                                                     cores_logical=8, gpus=(Gpu(0, "g", 10, 5),)))

# (name, a valid body map, how it is read back: map -> value or BodyError)
SCHEMAS: list[tuple[str, dict[str, Any], Any]] = [
    ("GenerateRequest", GenerateRequest(SAMPLING, candidates=5, strategy="majority", seed=3,
                                        timeout_s=9.0, model="m", stream="live").to_map(),
     GenerateRequest.from_map),
    ("GenerateRequest(prompt)", GenerateRequest(Sampling(prompt="p")).to_map(),
     GenerateRequest.from_map),
    ("Task", Task("job1", 2, 7, SAMPLING).to_map(), Task.from_map),
    ("Chunk", Chunk("job1", 2, 5, "tok").to_map(), Chunk.from_map),
    ("Chunk(joined)", Chunk("job1", 2, 5, "tok tok", tokens=2).to_map(), Chunk.from_map),
    ("Outcome", Outcome("job1", 2, "text", "stop", {"completion_tokens": 3},
                        {"ttft_s": 0.1, "total_s": 0.2}, logprob=-0.5).to_map(), Outcome.from_map),
    ("Outcome(error)", Outcome("job1", 2, error="oops", error_code="x").to_map(), Outcome.from_map),
    ("WorkerProfile", PROFILE.to_map(), lambda m: WorkerProfile.from_frame(pack(m), "fallback")),
]


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a body a value sits, as a path of keys and list indexes."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, prefix + (i,))
    return out


def replaced(body: Any, path: tuple, new: Any) -> Any:
    """A copy of body with the value at path replaced (a missing key is added)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(body, dict):
        return {**body, head: replaced(body.get(head), rest, new)}
    copy = list(body)
    copy[head] = replaced(copy[head], rest, new)
    return copy


@st.composite
def hostile_bodies(draw, schema=st.sampled_from(SCHEMAS)):
    """(schema, map): a real body with one field, or one nested value, replaced or added."""
    name, body, read = draw(schema)
    where = draw(st.sampled_from(paths(body)) | st.tuples(text))  # an existing or a new key
    return (name, read), replaced(body, where, draw(values))
