"""Tool calls as text: how tools are offered to a model, and how its calls are read back.

Any model can call a tool this way, with or without a chat template that knows tools: the
tools go into the prompt as a system text, the model answers with a JSON object
`{"name": ..., "arguments": {...}}` (or a list of them), and the broker reads that back.
The reader is forgiving about the wrapping (a markdown code fence, `<tool_call>` tags,
OpenAI's own `{"type": "function", "function": {...}}` shape, arguments as a JSON string)
and strict about the content: the name must be one of the offered tools and the
arguments a JSON object. Candidates vote on `calls_key`: the names and canonical JSON of
the arguments, so two calls that differ only in key order or spacing are the same vote.

Pure functions; `tools` are OpenAI tool definitions, checked by `check_tools`. Reading a
text back is linear in its length (a candidate may be megabytes): no backtracking regular
expression, and a bounded number of places tried as the start of a JSON value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from common.errors import BodyError

TOOL_CHOICES = ("auto", "none", "required")
MAX_TOOLS = 128
MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # the whole name (fullmatch)
MAX_JSON_STARTS = 64  # line starts tried as a JSON value in prose, at most
MAX_SCHEMA_DEPTH = 32  # a tool's parameters nest at most this deep (a whole body: 64)


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # canonical JSON text of an object: sorted keys, no spaces

    def to_map(self) -> dict[str, str]:
        return {"name": self.name, "arguments": self.arguments}


def canonical(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def calls_key(calls: tuple[ToolCall, ...] | list[ToolCall]) -> str:
    """What candidates vote on: the calls' names and canonical arguments, in any order
    (parallel calls are the same answer whichever a model wrote first)."""
    return json.dumps(sorted([c.name, c.arguments] for c in calls), separators=(",", ":"),
                      ensure_ascii=False)


# -- the offered tools ---------------------------------------------------------------------
def check_tools(raw: Any) -> tuple[dict[str, Any], ...]:
    """OpenAI `tools`, checked: a list of {"type": "function", "function": {"name", ...}}."""
    if not isinstance(raw, list):
        raise BodyError("field 'tools' must be a list", "tools")
    if len(raw) > MAX_TOOLS:
        raise BodyError(f"field 'tools' may list at most {MAX_TOOLS} tools", "tools")
    seen: set[str] = set()
    out = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type", "function") != "function":
            raise BodyError(f"field 'tools[{i}]' must be {{\"type\": \"function\", "
                            "\"function\": {...}}", "tools")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise BodyError(f"field 'tools[{i}].function.name' must be 1 to {MAX_NAME} letters, "
                            "digits, '_', '.' or '-'", "tools")
        if name in seen:
            raise BodyError(f"field 'tools' names the function '{name}' twice", "tools")
        params = fn.get("parameters", {})
        if params is not None and not isinstance(params, dict):
            raise BodyError(f"field 'tools[{i}].function.parameters' must be a JSON schema "
                            "object", "tools")
        if params and _depth(params) > MAX_SCHEMA_DEPTH:  # the HTTP side reads any depth
            raise BodyError(f"field 'tools[{i}].function.parameters' nests deeper than "
                            f"{MAX_SCHEMA_DEPTH} levels", "tools")
        desc = fn.get("description", "")
        if desc is not None and not isinstance(desc, str):
            raise BodyError(f"field 'tools[{i}].function.description' must be a string", "tools")
        seen.add(name)
        out.append({"type": "function", "function": {
            "name": name, "description": desc or "", "parameters": params or {}}})
    return tuple(out)


def _depth(value: Any) -> int:
    """How deep maps and lists nest in a value, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item \
            if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in children)
    return deepest


def tool_names(tools: tuple[dict[str, Any], ...] | None) -> set[str]:
    return {t["function"]["name"] for t in tools or ()}


# -- reading calls back --------------------------------------------------------------------
_JSON_START = re.compile(r"(?m)^[ \t]*([\[{])")
_FENCE_TAG = re.compile(r"[A-Za-z0-9_+.-]*")


def parse_tool_calls(text: str, names: set[str]) -> tuple[ToolCall, ...]:
    """The calls a candidate made, or () when its text is not a call of an offered tool.

    Tried in order: the `<tool_call>` blocks (every one must hold calls), the whole text
    as JSON, each fenced block, then the first JSON value that starts a line. A text with
    a call and more prose around it still counts as the call: the prose is dropped, never
    shown as content.
    """
    if not names or not text:
        return ()
    tagged = [_calls_in(_loads(block), names) for block in _tagged(text)]
    if tagged and all(tagged):
        return tuple(call for calls in tagged for call in calls)
    for chunk in (text, *_fenced(text)):
        if calls := _calls_in(_loads(chunk), names):
            return tuple(calls)
    return tuple(_calls_in(_first_json(text), names))


def _tagged(text: str) -> list[str]:
    """What each <tool_call> holds, up to its </tool_call> (or the next tag, or the end)."""
    return [part.split("</tool_call>", 1)[0] for part in text.split("<tool_call>")[1:]]


def _fenced(text: str) -> list[str]:
    """Each closed ``` block's content, without its language tag."""
    parts = text.split("```")
    blocks = []
    for i in range(1, len(parts) - 1, 2):
        first, newline, rest = parts[i].partition("\n")
        tag = _FENCE_TAG.match(first)  # a tag that is the whole first line
        blocks.append(rest if newline and tag and tag.end() == len(first.rstrip()) else parts[i])
    return blocks


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
        return None


def _first_json(text: str) -> Any:
    decoder = json.JSONDecoder()
    for tries, m in enumerate(_JSON_START.finditer(text)):
        if tries == MAX_JSON_STARTS:
            break
        try:
            return decoder.raw_decode(text, m.start(1))[0]
        except (ValueError, RecursionError):
            continue
    return None


def _calls_in(value: Any, names: set[str]) -> list[ToolCall]:
    """Every call in a parsed JSON value, or [] if any part of it is not a valid call."""
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        value = value["tool_calls"]
    items = value if isinstance(value, list) else [value]
    calls = [_one_call(item, names) for item in items]
    if not calls or any(c is None for c in calls):
        return []
    return calls  # type: ignore[return-value]


def _one_call(item: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):  # OpenAI's own shape
        item = item["function"]
    name = item.get("name")
    args = item.get("arguments", item.get("parameters", {}))
    if isinstance(args, str):
        args = _loads(args) if args.strip() else {}
    if not isinstance(name, str) or name not in names or not isinstance(args, dict):
        return None
    return ToolCall(name, canonical(args))


# -- offering tools and writing calls --------------------------------------------------------
def render_calls(calls: list[ToolCall] | tuple[ToolCall, ...]) -> str:
    """How calls look in a transcript: the very form the model is asked to answer in."""
    maps = [{"name": c.name, "arguments": json.loads(c.arguments or "{}")} for c in calls]
    return json.dumps(maps[0] if len(maps) == 1 else maps, ensure_ascii=False)


def tools_prompt(tools: tuple[dict[str, Any], ...], choice: str = "auto",
                 name: str | None = None) -> str:
    """The system text that offers the tools and says how to call one."""
    offered = [t for t in tools if name is None or t["function"]["name"] == name]
    listing = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in offered)
    how = ('To call a tool, answer with only a JSON object {"name": <tool name>, '
           '"arguments": {<argument>: <value>}} and nothing else.')
    if name is not None:
        when = f"You must call the tool '{name}' now."
    elif choice == "required":
        when = "You must call one of the tools now."
    else:
        when = "Call a tool when it helps to answer; otherwise answer in plain text."
    return f"You can use these tools:\n{listing}\n{how}\n{when}"


def calls_schema(tools: tuple[dict[str, Any], ...], name: str | None = None) -> dict[str, Any]:
    """A JSON schema that only a call of an offered tool (or of `name`) satisfies."""
    options = []
    for tool in tools:
        fn = tool["function"]
        if name is not None and fn["name"] != name:
            continue
        params = fn.get("parameters") or {"type": "object"}
        options.append({"type": "object", "properties": {
            "name": {"const": fn["name"]}, "arguments": params},
            "required": ["name", "arguments"]})
    return options[0] if len(options) == 1 else {"anyOf": options}
