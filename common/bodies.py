"""The `generate` bodies: a public contract other clients and workers are written against.

client -> broker  GenerateRequest   (REQUEST to service `generate`)
broker -> worker  Task              (REQUEST, one per candidate)
worker -> broker  Chunk             (PARTIAL)   and  Outcome (FINAL)
Unknown keys are ignored; a missing or ill-typed key raises BodyError naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any

from common.codec import field, number
from common.errors import BodyError
from common.tool_calls import TOOL_CHOICES, check_tools, tool_names

STRATEGIES = ("auto", "similarity", "majority", "weighted", "first", "confidence", "judge")
DEFAULT_STRATEGY = "auto"  # majority over extracted answers where they are short, else similarity
STREAM_MODES = ("progress", "winner", "live")
ROLES = ("system", "user", "assistant", "tool")
MAX_CANDIDATES = 64
MAX_TOKENS = 32768


def _messages(m: dict[str, Any]) -> tuple[dict[str, str], ...] | None:
    raw = field(m, "messages", list, None)
    if raw is None:
        return None
    if not raw:
        raise BodyError("field 'messages' must not be empty", "messages")
    out = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise BodyError(f"field 'messages[{i}]' must be a map", "messages")
        role = msg.get("role")
        content = msg.get("content")
        if role not in ROLES:
            raise BodyError(f"field 'messages[{i}].role' must be one of {', '.join(ROLES)}", "messages")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise BodyError(f"field 'messages[{i}].content' must be a string", "messages")
        out.append({"role": role, "content": content})
    return tuple(out)


def _stop(m: dict[str, Any]) -> tuple[str, ...]:
    raw = field(m, "stop", (str, list), [])
    items = [raw] if isinstance(raw, str) else raw
    if not all(isinstance(s, str) and s for s in items):
        raise BodyError("field 'stop' must be a string or a list of non-empty strings", "stop")
    return tuple(items)


def _prompt_or_messages(m: dict[str, Any]) -> tuple[str | None, tuple[dict[str, str], ...] | None]:
    messages = _messages(m)
    prompt = field(m, "prompt", str, None)
    if (messages is None) == (prompt is None):
        raise BodyError("exactly one of the fields 'messages' and 'prompt' must be given", "messages")
    return prompt, messages


@dataclass(frozen=True, slots=True)
class Sampling:
    """What every candidate of a job shares: the input and how to sample it."""

    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    stop: tuple[str, ...] = ()
    top_p: float = 1.0
    tools: tuple[dict[str, Any], ...] | None = None  # OpenAI tool definitions (tool_calls.py)
    tool_choice: str = "auto"      # auto | none | required (tool_name set: that one tool)
    tool_name: str | None = None   # the one tool the answer must call
    logprobs: bool = False         # report the mean token log-probability (Outcome.logprob)

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> "Sampling":
        prompt, messages = _prompt_or_messages(m)
        raw_tools = m.get("tools")
        tools = check_tools(raw_tools) if raw_tools is not None else None
        choice, name = _tool_choice(m, tools)
        return cls(
            prompt=prompt,
            messages=messages,
            max_tokens=number(m, "max_tokens", 1, MAX_TOKENS, 256, integer=True),
            temperature=number(m, "temperature", 0.0, 2.0, 0.7),
            stop=_stop(m),
            top_p=number(m, "top_p", 0.0, 1.0, 1.0),
            tools=tools,
            tool_choice=choice,
            tool_name=name,
            logprobs=field(m, "logprobs", bool, False),
        )

    @property
    def calls_tools(self) -> bool:
        """Tools are offered and the answer may (or must) call one."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def must_call(self) -> bool:
        """The answer must be a call (tool_choice "required"; a tool_name implies it)."""
        return self.calls_tools and self.tool_choice == "required"

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature,
                               "stop": list(self.stop), "top_p": self.top_p}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        else:
            out["messages"] = [dict(x) for x in self.messages or ()]
        if self.logprobs:
            out["logprobs"] = True
        if self.tools is not None:
            out.update(tools=list(self.tools), tool_choice=self.tool_choice)
            if self.tool_name is not None:
                out["tool_name"] = self.tool_name
        return out


def _tool_choice(m: dict[str, Any], tools: tuple[dict[str, Any], ...] | None
                 ) -> tuple[str, str | None]:
    choice = field(m, "tool_choice", str, "auto")
    if choice not in TOOL_CHOICES:
        raise BodyError(f"field 'tool_choice' must be one of {', '.join(TOOL_CHOICES)}",
                        "tool_choice")
    name = field(m, "tool_name", str, None)
    if (choice == "required" or name is not None) and not tools:
        raise BodyError("field 'tool_choice' asks for a tool call, but no tools are given",
                        "tool_choice")
    if name is not None:
        if choice == "none":
            raise BodyError("field 'tool_choice' 'none' cannot go with a 'tool_name' to call",
                            "tool_choice")
        if name not in tool_names(tools):
            raise BodyError(f"field 'tool_name' names '{name}', which is not among the tools",
                            "tool_name")
        choice = "required"
    return choice, name


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    sampling: Sampling
    candidates: int = 3
    strategy: str = DEFAULT_STRATEGY
    seed: int | None = None
    timeout_s: float | None = None
    model: str | None = None
    stream: str = "progress"
    spread: float = 0.0     # candidates' temperatures spread evenly over temperature +- spread
    greedy: bool = True     # of 2+ candidates, candidate 0 decodes greedily (temperature 0)
    quorum: bool = True     # majority-style votes end early once the leader cannot be overtaken
    shuffle: bool = False   # each candidate but 0 sees the example turns in its own order

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> "GenerateRequest":
        strategy = field(m, "strategy", str, DEFAULT_STRATEGY)
        if strategy not in STRATEGIES:
            raise BodyError(f"field 'strategy' must be one of {', '.join(STRATEGIES)}", "strategy")
        stream = field(m, "stream", str, "progress")
        if stream not in STREAM_MODES:
            raise BodyError(f"field 'stream' must be one of {', '.join(STREAM_MODES)}", "stream")
        return cls(
            sampling=Sampling.from_map(m),
            candidates=number(m, "candidates", 1, MAX_CANDIDATES, 3, integer=True),
            strategy=strategy,
            seed=number(m, "seed", 0, 2**31 - 1, None, integer=True),
            timeout_s=number(m, "timeout_s", 0.001, 86400.0, None),
            model=field(m, "model", str, None),
            stream=stream,
            spread=number(m, "temperature_spread", 0.0, 2.0, 0.0),
            greedy=field(m, "greedy", bool, True),
            quorum=field(m, "quorum", bool, True),
            shuffle=field(m, "shuffle_examples", bool, False),
        )

    def to_map(self) -> dict[str, Any]:
        out = self.sampling.to_map()
        out.update(candidates=self.candidates, strategy=self.strategy, stream=self.stream,
                   temperature_spread=self.spread, greedy=self.greedy, quorum=self.quorum,
                   shuffle_examples=self.shuffle)
        for key in ("seed", "timeout_s", "model"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True, slots=True)
class Task:
    """One candidate of one job, as the broker hands it to a worker slot."""

    job: str
    cand: int
    seed: int
    sampling: Sampling

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> "Task":
        return cls(
            job=field(m, "job", str),
            cand=number(m, "cand", 0, MAX_CANDIDATES * 2, integer=True),
            seed=number(m, "seed", 0, 2**32 - 1, integer=True),
            sampling=Sampling.from_map(m),
        )

    def to_map(self) -> dict[str, Any]:
        return {"job": self.job, "cand": self.cand, "seed": self.seed, **self.sampling.to_map()}


@dataclass(frozen=True, slots=True)
class Chunk:
    job: str
    cand: int
    seq: int
    text: str
    tokens: int = 1  # model pieces the text holds: a slot that outpaces its socket joins them

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> "Chunk":
        return cls(field(m, "job", str), number(m, "cand", 0, MAX_CANDIDATES * 2, integer=True),
                   number(m, "seq", 0, MAX_SEQ, integer=True), field(m, "text", str),
                   number(m, "tokens", 1, MAX_TOKENS, 1, integer=True))

    def to_map(self) -> dict[str, Any]:
        m = {"job": self.job, "cand": self.cand, "seq": self.seq, "text": self.text}
        if self.tokens != 1:  # a one-piece PARTIAL stays as every broker knows it
            m["tokens"] = self.tokens
        return m


USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
TIMING_KEYS = ("total_s", "ttft_s", "tokens_per_s")
ERROR_REQUEST = "request"  # error_kind: the request itself cannot be served (too long, ...)
ERROR_PEER = "peer"        # error_kind: this peer failed; another may succeed
ERROR_KINDS = (ERROR_REQUEST, ERROR_PEER)
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # error_code: the prompt fits no context
MAX_SEQ = 2**31 - 1
MAX_COUNT = 2**31 - 1


MIN_LOGPROB = -1e4   # a mean token log-probability below this is no real model's
MAX_REASON = 64      # characters of a finish_reason
MAX_ERROR = 1000     # characters of a peer's error message kept; the rest is cut


def _short(value: str | None, name: str) -> str | None:
    if value is not None and len(value) > MAX_REASON:
        raise BodyError(f"field '{name}' must be at most {MAX_REASON} characters", name)
    return value


def _clipped(error: str | None) -> str | None:
    """A peer's error message, cut to a length that fits a log line and a status reply."""
    if error is None or len(error) <= MAX_ERROR:
        return error
    return error[:MAX_ERROR] + "..."


def _usage(m: dict[str, Any]) -> dict[str, int]:
    """The known token counts, each a non-negative integer; null means not reported."""
    raw = field(m, "usage", dict, {})
    return {k: number(raw, k, 0, MAX_COUNT, integer=True, name=f"usage.{k}")
            for k in USAGE_KEYS if raw.get(k) is not None}


def _timings(m: dict[str, Any]) -> dict[str, float]:
    """The known timings, each a finite non-negative number; null means not measured."""
    raw = field(m, "timings", dict, {})
    return {k: number(raw, k, 0.0, 1e9, name=f"timings.{k}")
            for k in TIMING_KEYS if raw.get(k) is not None}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A candidate's end: the whole text with usage and timings, or an error.

    `error_kind` says whose fault an error is: `request` (no peer could serve it: not
    retried, not held against the peer) or `peer` (the default: retried elsewhere once).
    """

    job: str
    cand: int
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] = dc_field(default_factory=dict)
    timings: dict[str, float] = dc_field(default_factory=dict)
    error: str | None = None
    error_kind: str = ERROR_PEER
    error_code: str | None = None  # machine-readable: CONTEXT_LENGTH_EXCEEDED, ...
    logprob: float | None = None   # mean log-probability of the generated tokens (<= 0)

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> "Outcome":
        kind = field(m, "error_kind", str, ERROR_PEER)
        if kind not in ERROR_KINDS:
            raise BodyError(f"field 'error_kind' must be one of {', '.join(ERROR_KINDS)}",
                            "error_kind")
        return cls(
            job=field(m, "job", str),
            cand=number(m, "cand", 0, MAX_CANDIDATES * 2, integer=True),
            text=field(m, "text", str, ""),
            finish_reason=_short(field(m, "finish_reason", str, None), "finish_reason"),
            usage=_usage(m),
            timings=_timings(m),
            error=_clipped(field(m, "error", str, None)),
            error_kind=kind,
            error_code=_short(field(m, "error_code", str, None), "error_code"),
            logprob=number(m, "logprob", MIN_LOGPROB, 0.0, None),
        )

    def to_map(self) -> dict[str, Any]:
        if self.error is not None:
            out = {"job": self.job, "cand": self.cand, "error": self.error,
                   "error_kind": self.error_kind}
            if self.error_code is not None:
                out["error_code"] = self.error_code
            return out
        out = {"job": self.job, "cand": self.cand, "text": self.text,
               "finish_reason": self.finish_reason, "usage": dict(self.usage),
               "timings": dict(self.timings)}
        if self.logprob is not None:
            out["logprob"] = self.logprob
        return out
