"""Chat messages to a prompt, for models with no chat template, and the streamed answer's cuts.

The bundled Gemma 3 270M is a base model: llama-cpp-python's llama-2 fallback makes it
answer nothing. A plain transcript answers (DESIGN.md), but a base model goes on writing
the transcript: the next turn ("\\nUser: ..."), or roles it invents ("Customer:", "A:").
So generation stops at any role label that starts a line, and `LabelStripper` drops a
label the answer itself starts with ("Assistant: Paris" -> "Paris"), also when the label
arrives split over streamed pieces. `AnswerFilter` puts both together with the request's
own stop strings, for a backend that cuts stop strings itself (mlx-lm does not).

Tools are offered as text (common/tool_calls.py), the same way for every backend and
template: `offer_tools` puts them at the front of the system message, or before a raw
prompt; `forced_call_schema` is the JSON schema of a call the answer must make, for a
backend that can constrain its output to it (llama.cpp's grammars).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from common.bodies import Sampling
from common.tool_calls import calls_schema, tools_prompt

ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
# labels base models invent for the two sides of a dialogue
INVENTED_LABELS = ("Human", "AI", "Customer", "Agent", "Bot", "Client", "Support", "Person",
                   "Student", "Teacher", "Q", "A", "Question", "Answer")
LABELS = (*ROLE_LABELS.values(), *INVENTED_LABELS)
TURN_STOPS = tuple(f"\n{label}:" for label in LABELS)
_HEADS = tuple(f"{label}:" for label in LABELS)


def transcript(messages: Sequence[dict[str, str]]) -> str:
    lines = [f"{ROLE_LABELS[m['role']]}: {m['content'].strip()}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def stops_for_chat(user_stops: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*TURN_STOPS, *user_stops]))


def prompt_and_stops(sampling: Sampling) -> tuple[str, list[str]]:
    """The text to continue and where to stop: the raw prompt, or the chat transcript."""
    if sampling.prompt is not None:
        return sampling.prompt, list(sampling.stop)
    return transcript(sampling.messages or ()), stops_for_chat(sampling.stop)


def offer_tools(sampling: Sampling) -> Sampling:
    """The sampling with its tools offered in the prompt; as it was where none are (or
    tool_choice is "none"). Chat: merged into the front of the system message (one is
    added first where there is none); a raw prompt: put before it."""
    if not sampling.calls_tools:
        return sampling
    offer = tools_prompt(sampling.tools or (), sampling.tool_choice, sampling.tool_name)
    if sampling.prompt is not None:
        return replace(sampling, prompt=f"{offer}\n\n{sampling.prompt}")
    messages = list(sampling.messages or ())
    if messages and messages[0]["role"] == "system":
        system = "\n\n".join(filter(None, (offer, messages[0]["content"].strip())))
        messages[0] = {**messages[0], "content": system}
    else:
        messages.insert(0, {"role": "system", "content": offer})
    return replace(sampling, messages=tuple(messages))


def forced_call_schema(sampling: Sampling) -> dict[str, Any] | None:
    """The JSON schema only a valid call satisfies, where the answer must be a call
    (tool_choice "required", or a tool_name); None where it may be text."""
    if not sampling.must_call:
        return None
    return calls_schema(sampling.tools or (), sampling.tool_name)


def strip_label(text: str) -> str:
    """The answer without the role labels it starts with: "Assistant: Paris" -> "Paris"."""
    stripper = LabelStripper()
    return stripper.feed(text) + stripper.finish()


class LabelStripper:
    """Streams an answer on, minus any role labels and blanks at its start (the transcript
    ends in "Assistant:", so the answer's first token starts with the space after it).

    `feed` returns the text that is safe to pass on now; it holds back only the head that
    could still become a label ("Assis", or the blanks after "Assistant:").
    """

    def __init__(self) -> None:
        self._head = ""     # held back: the answer so far, while it may be a label
        self._done = False  # the answer has started: everything passes straight through

    def feed(self, piece: str) -> str:
        if self._done:
            return piece
        self._head += piece
        while True:
            body = self._head.lstrip()
            label = next((h for h in _HEADS if body.startswith(h)), None)
            if label is None:
                break
            self._head = body[len(label):]
        body = self._head.lstrip()
        if not body or any(h.startswith(body) for h in _HEADS):
            return ""  # still undecided: blanks, or the start of a label
        self._done = True
        return self.finish()

    def finish(self) -> str:
        """What is still held back when the answer ends (it never became a label)."""
        head, self._head, self._done = self._head, "", True
        return head.lstrip()


class StopCutter:
    """Streams text on up to the first stop string, and never any part of one.

    `feed` holds back only the tail that could still grow into a stop string, so a stop
    split over pieces ("\nUs" + "er:") is cut as surely as a whole one.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self._held + piece
        cut = min((i for s in self.stops if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self._held, self.stopped = "", True
            return text[:cut]
        keep = max((n for s in self.stops for n in range(len(s) - 1, 0, -1)
                    if text.endswith(s[:n])), default=0)
        self._held = text[len(text) - keep:]
        return text[:len(text) - keep]

    def finish(self) -> str:
        """What is still held back when the text ends without a stop."""
        held, self._held = self._held, ""
        return held


class AnswerFilter:
    """A streamed answer cut at its stop strings, then, for a transcript, its leading label."""

    def __init__(self, stops: Sequence[str], strip_labels: bool) -> None:
        self._cutter = StopCutter(stops)
        self._stripper = LabelStripper() if strip_labels else None

    @property
    def stopped(self) -> bool:
        """A stop string was met: nothing more passes."""
        return self._cutter.stopped

    def feed(self, piece: str) -> str:
        text = self._cutter.feed(piece)
        if self._stripper is not None and text:
            text = self._stripper.feed(text)
        return text + self._rest() if self.stopped else text

    def finish(self) -> str:
        """What is still held back once generation ended by itself (length, end of text)."""
        text = self._cutter.finish()
        if self._stripper is not None and text:
            text = self._stripper.feed(text)
        return text + self._rest()

    def _rest(self) -> str:
        return self._stripper.finish() if self._stripper is not None else ""
