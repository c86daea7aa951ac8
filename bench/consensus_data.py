"""The accuracy benchmark's question set, prompts and scoring (bench/eval_consensus.py).

Each item of bench/questions.jsonl: category, question, gold answer and accepted
alternatives. A candidate is right when its extracted answer's key equals the key of the
gold answer or of an alternative. The prompt is a raw few-shot completion ("Q: ...\\nA: ...")
that stops at the end of the answer line: the bundled Gemma 3 270M is a base model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from broker.extract import extract

QUESTIONS = Path(__file__).with_name("questions.jsonl")
CATEGORIES = ("arithmetic", "capitals", "units", "yesno", "word", "opposites")
STOP = ("\n",)
STYLES = ("show", "long", "category", "mixed", "zero")  # few-shot styles; "show" is the chosen one
FORMATS = ("chat", "qa")  # few-shot as chat turns, or as a raw "Q: ... A: ..." prompt

# Few-shot examples, none of them in the question set, one block per category.
SHOTS = {
    "arithmetic": [("What is 4 + 3?", "7"), ("What is 10 - 6?", "4"), ("What is 5 * 3?", "15"),
                   ("What is 2 + 2?", "4"), ("What is 12 + 10?", "22"), ("What is 9 - 2?", "7"),
                   ("What is 8 / 2?", "4"), ("What is 3 * 3?", "9")],
    "capitals": [("What is the capital of Chile?", "Santiago"), ("What is the capital of Peru?", "Lima"),
                 ("What is the capital of Scotland?", "Edinburgh"), ("What is the capital of Nigeria?", "Abuja"),
                 ("What is the capital of Colombia?", "Bogota"), ("What is the capital of Ukraine?", "Kyiv"),
                 ("What is the capital of Czechia?", "Prague"), ("What is the capital of Morocco?", "Rabat")],
    "units": [("How many meters are in 4 kilometers?", "4000"), ("How many seconds are in 2 minutes?", "120"),
              ("How many days are in 5 weeks?", "35"), ("How many centimeters are in 2 meters?", "200"),
              ("How many minutes are in 4 hours?", "240"), ("How many grams are in 3 kilograms?", "3000"),
              ("How many hours are in 4 days?", "96"), ("How many inches are in 3 feet?", "36")],
    "yesno": [("Is the ocean salty?", "Yes"), ("Can a cat drive a car?", "No"), ("Is a rose a flower?", "Yes"),
              ("Is the number 9 even?", "No"), ("Do horses have four legs?", "Yes"),
              ("Is Berlin in Italy?", "No"), ("Is 2 less than 6?", "Yes"), ("Is the grass usually blue?", "No")],
    "word": [("Amy has 2 cups and buys 3 more. How many cups does she have?", "5"),
             ("A bus has 9 seats and 4 are taken. How many seats are free?", "5"),
             ("Each box has 2 toys. How many toys are in 4 boxes?", "8"),
             ("Paul had 6 coins and found 2 more. How many coins does he have?", "8"),
             ("There were 10 ducks and 3 swam away. How many ducks are left?", "7"),
             ("A table has 4 legs. How many legs do 2 tables have?", "8"),
             ("Rosa is 5 years old. How old will she be in 4 years?", "9"),
             ("A plate has 12 grapes. Ali eats 2. How many grapes are left?", "10")],
    "opposites": [("What is the opposite of \"soft\"?", "hard"), ("What is the opposite of \"quiet\"?", "loud"),
                  ("What is the opposite of \"below\"?", "above"), ("What is the opposite of \"long\"?", "short"),
                  ("What is the opposite of \"alive\"?", "dead"), ("What is the opposite of \"wide\"?", "narrow"),
                  ("What is the opposite of \"sweet\"?", "sour"), ("What is the opposite of \"front\"?", "back")],
}
# "show" style: the answer line shows its working first ("4 + 3 = 7"); the vote reads the
# final number. Categories not listed here keep their plain answers.
SHOWN = {
    "arithmetic": ["4 + 3 = 7", "10 - 6 = 4", "5 * 3 = 15", "2 + 2 = 4", "12 + 10 = 22", "9 - 2 = 7",
                   "8 / 2 = 4", "3 * 3 = 9"],
    "units": ["4 * 1000 = 4000", "2 * 60 = 120", "5 * 7 = 35", "2 * 100 = 200", "4 * 60 = 240",
              "3 * 1000 = 3000", "4 * 24 = 96", "3 * 12 = 36"],
    "word": ["2 + 3 = 5", "9 - 4 = 5", "4 * 2 = 8", "6 + 2 = 8", "10 - 3 = 7", "2 * 4 = 8", "5 + 4 = 9",
             "12 - 2 = 10"],
    "opposites": ["The opposite of soft is hard.", "The opposite of quiet is loud.",
                  "The opposite of below is above.", "The opposite of long is short.",
                  "The opposite of alive is dead.", "The opposite of wide is narrow.",
                  "The opposite of sweet is sour.", "The opposite of front is back."],
}


@dataclass(frozen=True, slots=True)
class Item:
    category: str
    question: str
    answer: str
    alternatives: tuple[str, ...] = ()

    @property
    def golds(self) -> tuple[str, ...]:
        return (self.answer, *self.alternatives)


def load(path: Path = QUESTIONS) -> list[Item]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            m = json.loads(line)
            items.append(Item(m["category"], m["question"], m["answer"],
                              tuple(m.get("alternatives", ()))))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path.name} line {n} is not a question item ({e})") from e
    return items


def shots_for(item: Item, style: str) -> list[tuple[str, str]]:
    """The few-shot (question, answer) pairs a style puts before the item's question."""
    if style == "zero":
        return []
    if style == "mixed":
        return [s for cat in CATEGORIES for s in SHOTS[cat][:1]]
    shots = SHOTS[item.category]
    if style == "show" and item.category in SHOWN:
        return [(q, a) for (q, _), a in zip(shots, SHOWN[item.category])]
    return shots if style == "long" else shots[:3]


def prompt(item: Item, style: str = "show") -> str:
    """The raw completion prompt: "Q: ...\nA: ..." examples, then the question and "A:"."""
    lines = [f"Q: {q}\nA: {a}\n" for q, a in shots_for(item, style)]
    return "\n".join([*lines, f"Q: {item.question}\nA:"])


def messages(item: Item, style: str = "show") -> tuple[dict[str, str], ...]:
    """The same examples as chat turns, the item's question last: the broker then reads the
    question alone (not the examples) when it extracts a candidate's answer."""
    turns = []
    for q, a in shots_for(item, style):
        turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return (*turns, {"role": "user", "content": item.question})


def answer_key(text: str, question: str = "") -> str | None:
    """The key votes compare and scoring checks: broker/extract.py's."""
    got = extract(text, question)
    return None if got is None else got.key


def gold_keys(item: Item) -> set[str]:
    """The gold answers' keys, read alone and as a candidate's answer to the question is read
    (extraction drops the question's own words: "Mexico City" to "What is the capital of
    Mexico?" is "city")."""
    return {k for g in item.golds for q in ("", item.question)
            if (k := answer_key(g, q)) is not None}


def is_right(item: Item, text: str) -> bool:
    key = answer_key(text, item.question)
    return key is not None and key in gold_keys(item)
