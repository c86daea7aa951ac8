"""Chat messages to a prompt, for models whose GGUF carries no chat template.

The bundled Gemma 3 270M is a base model: llama-cpp-python's llama-2 fallback makes it
answer nothing. A plain transcript answers (DESIGN.md), but a base model goes on writing
the transcript: the next turn ("\\nUser: ..."), or roles it invents ("Customer:", "A:").
So generation stops at any role label that starts a line, and `LabelStripper` drops a
label the answer itself starts with ("Assistant: Paris" -> "Paris"), also when the label
arrives split over streamed pieces.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def strip_label(text: str) -> str:
    """The answer without the role labels it starts with: "Assistant: Paris" -> "Paris"."""
    stripper = LabelStripper()
    return stripper.feed(text) + stripper.finish()


class LabelStripper:
    """Streams an answer on, minus any role labels at its start.

    `feed` returns the text that is safe to pass on now; it holds back only the head that
    could still become a label ("Assis", or the blanks after "Assistant:").
    """

    def __init__(self) -> None:
        self._head = ""     # held back: the answer so far, while it may be a label
        self._done = False  # the answer has started: everything passes straight through
        self._stripped = False  # a label was dropped: the blanks after it go too

    def feed(self, piece: str) -> str:
        if self._done:
            return piece
        self._head += piece
        while True:
            body = self._head.lstrip()
            label = next((h for h in _HEADS if body.startswith(h)), None)
            if label is None:
                break
            self._head, self._stripped = body[len(label):], True
        body = self._head.lstrip()
        if not body or any(h.startswith(body) for h in _HEADS):
            return ""  # still undecided: blanks, or the start of a label
        self._done = True
        return self.finish()

    def finish(self) -> str:
        """What is still held back when the answer ends (it never became a label)."""
        head, self._head, self._done = self._head, "", True
        return head.lstrip() if self._stripped else head
