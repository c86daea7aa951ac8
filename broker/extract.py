"""Answer extraction: the short final answer a candidate's text gives, for majority votes.

CONTRACT (the lead's; a helper fills in the body):
    extract(text, question="") -> Extracted | None
`question` is the job's last user message (or prompt); a first line that repeats it is
ignored. None when the text gives no short, extractable answer.
"""

from __future__ import annotations

from dataclasses import dataclass

NUMBER, OPTION, YESNO, LINE = "number", "option", "yesno", "line"


@dataclass(frozen=True, slots=True)
class Extracted:
    kind: str    # NUMBER | OPTION | YESNO | LINE
    value: str   # canonical, what votes compare: "1250", "0.75", "B", "yes", "paris"
    shown: str   # as the text wrote it, for people: "1,250 km", "3/4", "(B)", "Yes", "Paris"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"


import re

# INTERIM (the lead's stand-in until the extraction helper's lands): option, last number
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")
_OPTION = re.compile(r"(?i:answer(?: is)?|option)\s*"
                     r"(?:[:=]\s*\(?([A-Ea-e])\)?|\(([A-Ea-e])\)|([A-E]))(?!\w)")
TAIL = 4096


def extract(text: str, question: str = "") -> Extracted | None:
    text = text[-TAIL:]
    options = _OPTION.findall(text)
    if options:
        letter = "".join(options[-1]).upper()
        return Extracted(OPTION, letter, letter)
    numbers = _NUMBER.findall(text)
    if numbers:
        return Extracted(NUMBER, numbers[-1].replace(",", ""), numbers[-1])
    return None
