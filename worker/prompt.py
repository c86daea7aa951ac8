"""Chat messages to a prompt, for models whose GGUF carries no chat template.

The bundled Gemma 3 270M is a base model: llama-cpp-python's llama-2 fallback makes it
answer nothing. A plain transcript with a stop at the next user turn answers (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence

ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
TURN_STOPS = ("\nUser:",)


def transcript(messages: Sequence[dict[str, str]]) -> str:
    lines = [f"{ROLE_LABELS[m['role']]}: {m['content'].strip()}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def stops_for_chat(user_stops: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*TURN_STOPS, *user_stops]))
