"""`swarm-ask` with no question on a terminal: a chat that keeps the conversation.

Each line is a user turn; the swarm's answer becomes the assistant turn, so the next
question carries the whole conversation. `/bye` or EOF ends the chat; Ctrl-C at the prompt
ends it too, and Ctrl-C during an answer cancels only that answer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from common.errors import SwarmError

PROMPT = ">>> "
BYE = "/bye"
Messages = tuple[dict[str, str], ...]
Answer = Callable[[Messages], str]  # asks the swarm; returns the winner's text


def chat(answer: Answer, err: TextIO = sys.stderr) -> Messages:
    """Run the chat until the user leaves; returns the conversation."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    print(f"Chatting with the swarm: {BYE} or Ctrl-D ends it, Ctrl-C stops an answer.",
          file=err, flush=True)
    messages: Messages = ()
    while True:
        try:
            line = input(PROMPT).strip()
        except (EOFError, KeyboardInterrupt):
            print(file=err)
            return messages
        if line == BYE:
            return messages
        if not line:
            continue
        turn = (*messages, {"role": "user", "content": line})
        try:
            text = answer(turn)
        except KeyboardInterrupt:
            print("\n(answer cancelled)", file=err, flush=True)
            continue
        except SwarmError as e:
            print(f"Error: {e}", file=err, flush=True)
            continue
        messages = (*turn, {"role": "assistant", "content": text})
