"""OpenAI request bodies to Swarm jobs: pure translation, every field checked.

`chat_request` and `completion_request` turn a decoded JSON body into an `ApiRequest`:
the GenerateRequest the job API takes, plus what only the HTTP side needs (streaming, n,
usage in the stream). A body Swarm cannot honour is an `ApiError` (400) that names the
field; a knob Swarm has no use for and that changes nothing (`user`, `store`,
`parallel_tool_calls`, ...) is accepted and ignored, like OpenAI's own server does.

History with tools becomes plain messages: an assistant's `tool_calls` are written into
its content in the very JSON form the model is asked to call in (tool_calls.render_calls),
and a tool's result becomes a `tool` message that names the tool it answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from common.bodies import MAX_CANDIDATES, STRATEGIES, GenerateRequest
from common.codec import number
from common.errors import BodyError
from common.frames import ANY_MODEL
from common.tool_calls import ToolCall, canonical, render_calls

DEFAULT_MAX_TOKENS = 512     # when the body names none
DEFAULT_CANDIDATES = 3
_SWARM_KNOBS = ("candidates", "strategy", "timeout_s", "temperature_spread", "greedy", "quorum",
                "shuffle_examples")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool", "function": "tool"}


class ApiError(Exception):
    """An error in the OpenAI shape: HTTP status, message, the field at fault, a code."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def to_map(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param)


@dataclass(frozen=True, slots=True)
class ApiRequest:
    job: GenerateRequest
    model: str
    stream: bool = False
    include_usage: bool = False
    n: int = 1
    chat: bool = True


def chat_request(body: Any) -> ApiRequest:
    """POST /v1/chat/completions."""
    body = _object(body)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("field 'messages' must be a non-empty list", "messages")
    job = {"messages": _messages(raw)}
    _tools(body, job)
    return _request(body, job, chat=True)


def completion_request(body: Any) -> ApiRequest:
    """POST /v1/completions (the legacy text API)."""
    body = _object(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad("field 'prompt' must be a string (one prompt per request)", "prompt")
    for name, harmless in (("echo", False), ("suffix", ""), ("best_of", 1)):
        value = body.get(name)  # True == 1 in Python: the type must match too
        if value is not None and (type(value) is not type(harmless) or value != harmless):
            raise bad(f"field '{name}' is not supported", name)
    return _request(body, {"prompt": prompt}, chat=False)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    return body


def _request(body: dict[str, Any], job: dict[str, Any], chat: bool) -> ApiRequest:
    model = body.get("model", ANY_MODEL)  # "swarm": every worker
    if not isinstance(model, str) or not model:
        raise bad("field 'model' must be a non-empty string", "model")
    _unsupported(body)
    n = _int(body, "n", 1, MAX_CANDIDATES, 1)
    swarm = _swarm(body)
    job.update(_sampling(body))
    job.update(swarm)
    wanted = job.get("candidates", DEFAULT_CANDIDATES)
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        job["candidates"] = max(wanted, n)  # n choices need n candidates; else from_map says why
    job["model"] = model
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("field 'stream' must be a boolean", "stream")
    # strategy first streams its leader live (GenerateService follows it); else the winner
    job["stream"] = "live" if stream and job.get("strategy") == "first" else "winner"
    try:
        request = GenerateRequest.from_map(job)
    except BodyError as e:
        raise bad(str(e), e.field) from e
    return ApiRequest(request, model, stream, _include_usage(body, stream), n, chat)


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    out["max_tokens"] = _int({name: tokens}, name, 1, 32768, DEFAULT_MAX_TOKENS)
    for key in ("temperature", "top_p", "seed", "stop"):
        if body.get(key) is not None:
            out[key] = body[key]
    if isinstance(out.get("seed"), int) and not isinstance(out["seed"], bool):
        out["seed"] %= 2**31  # OpenAI takes any 64-bit seed; the job's seed is 31 bits
    return out


def _swarm(body: dict[str, Any]) -> dict[str, Any]:
    """Swarm's own knobs: {"swarm": {"candidates": 5, "strategy": "majority", "timeout_s": 30,
    "temperature_spread": 0.3, "greedy": true, "quorum": false, "shuffle_examples": true}}."""
    raw = body.get("swarm")
    if raw is None:
        return {}
    knobs = ", ".join(_SWARM_KNOBS)
    if not isinstance(raw, dict):
        raise bad(f"field 'swarm' must be an object of {knobs}", "swarm")
    unknown = sorted((k for k in raw if k not in _SWARM_KNOBS), key=str)
    if unknown:
        raise bad(f"field 'swarm.{unknown[0]}' is unknown: use {knobs}", "swarm")
    if "strategy" in raw and raw["strategy"] not in STRATEGIES:
        raise bad(f"field 'swarm.strategy' must be one of {', '.join(STRATEGIES)}", "swarm")
    for name in ("greedy", "quorum", "shuffle_examples"):
        if raw.get(name) is not None and not isinstance(raw[name], bool):
            raise bad(f"field 'swarm.{name}' must be a boolean", "swarm")
    try:
        number(raw, "temperature_spread", 0.0, 2.0, None, name="swarm.temperature_spread")
    except BodyError as e:
        raise bad(str(e), "swarm") from e
    return {k: v for k, v in raw.items() if v is not None}


def _unsupported(body: dict[str, Any]) -> None:
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs"):
        raise bad("field 'logprobs' is not supported: the swarm returns no token probabilities",
                  "logprobs")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad("field 'response_format' supports only {\"type\": \"text\"}", "response_format")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise bad(f"field '{name}' is not supported: leave it out or 0", name)
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise bad("fields 'functions' and 'function_call' are the old API: use 'tools'",
                  "functions")


def _include_usage(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise bad("field 'stream_options' must be an object", "stream_options")
    if not stream:
        raise bad("field 'stream_options' is only allowed with 'stream': true", "stream_options")
    usage = options.get("include_usage", False)
    if not isinstance(usage, bool):
        raise bad("field 'stream_options.include_usage' must be a boolean", "stream_options")
    return usage


def _int(body: dict[str, Any], name: str, lo: int, hi: int, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad(f"field '{name}' must be an integer from {lo} to {hi}", name)
    return value


# -- messages and tools ----------------------------------------------------------------------
def _messages(raw: list[Any]) -> list[dict[str, str]]:
    names: dict[str, str] = {}  # tool call id -> the tool's name, for the results
    out = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise bad(f"field 'messages[{i}]' must be an object", "messages")
        role = _ROLES.get(msg.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise bad(f"field 'messages[{i}].role' must be system, developer, user, "
                      "assistant or tool", "messages")
        content = _content(msg.get("content"), i)
        if role == "assistant" and msg.get("tool_calls"):
            calls = _history_calls(msg["tool_calls"], i, names)
            content = f"{content}\n{render_calls(calls)}".strip()
        elif role == "tool":
            name = names.get(str(msg.get("tool_call_id")), msg.get("name"))
            content = f"Result of {name}: {content}" if isinstance(name, str) else content
        out.append({"role": role, "content": content})
    return out


def _content(content: Any, i: int) -> str:
    """A message's text: a string, or a list of text parts (images are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"field 'messages[{i}].content' must be a string or a list of parts",
                  "messages")
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise bad(f"field 'messages[{i}].content' has a '{kind}' part: only text is "
                      "supported", "messages")
        text = part.get("text")
        if not isinstance(text, str):
            raise bad(f"field 'messages[{i}].content' has a text part without text", "messages")
        texts.append(text)
    return "\n".join(texts)


def _history_calls(raw: Any, i: int, names: dict[str, str]) -> list[ToolCall]:
    if not isinstance(raw, list):
        raise bad(f"field 'messages[{i}].tool_calls' must be a list", "messages")
    calls = []
    for call in raw:
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise bad(f"field 'messages[{i}].tool_calls' has a call without a function name",
                      "messages")
        args = fn.get("arguments") or "{}"
        try:
            parsed = json.loads(args) if isinstance(args, str) else args
        except ValueError:
            parsed = {"_raw": args}  # the model's own broken call: keep it as it was
        if not isinstance(parsed, dict):
            parsed = {"_raw": parsed}
        names[str(call.get("id"))] = name
        calls.append(ToolCall(name, canonical(parsed)))
    return calls


def _tools(body: dict[str, Any], job: dict[str, Any]) -> None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is not None:
        if isinstance(tools, list) and not tools:
            tools = None  # some clients send [] for "no tools"
        else:
            job["tools"] = tools
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise bad("field 'tool_choice' must be auto, none, required or "
                      "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
        if tools is None and choice != "required":
            return  # "auto" or "none" without tools: nothing to choose
        job["tool_choice"] = choice
        return
    fn = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise bad("field 'tool_choice' must be auto, none, required or "
                  "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
    job["tool_name"] = fn["name"]
