"""Make tests/data/extract_cases.json: real candidate texts from the bundled model.

Runs Gemma 3 270M through the worker's own llama.cpp backend (the prompt and stops a
candidate gets) over varied short questions at
temperatures 0, 0.7 and 1.0, with and without few-shot turns, and writes each text with
its question. Labels ("expected": {"kind", "value"} or null, and "known_miss": why
extraction reads it otherwise) are written by hand into the JSON afterwards; a rerun keeps
the labels of cases whose text did not change.

    .venv/bin/python tests/data/make_extract_cases.py
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import click

from common.bodies import Sampling, Task

OUT = Path(__file__).with_name("extract_cases.json")
TEMPERATURES = (0.0, 0.7, 1.0)
MAX_TOKENS = 64
MC = "\nA) {}\nB) {}\nC) {}\nD) {}\nAnswer with the letter."

QUESTIONS = [
    # arithmetic
    "What is 12 + 7?", "What is 15 * 4?", "What is 100 - 37?", "What is 144 divided by 12?",
    "What is 3/4 as a decimal?", "What is 1,200 + 350?",
    # word problems
    "Tom has 5 apples and buys 3 more. How many apples does he have?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
    "A shirt costs $20 and is 25% off. What is the sale price?",
    "Sara has 12 cookies and gives away half of them. How many are left?",
    # unit conversions
    "How many centimeters are in 2 meters?", "How many minutes are in 3 hours?",
    "How many grams are in 1.5 kilograms?", "How many inches are in a foot?",
    # percentages
    "What is 20% of 50?", "What is 10% of 250?", "What percent of 200 is 50?",
    "Write 1/2 as a percentage.",
    # capitals
    "What is the capital of France?", "What is the capital of Japan?",
    "What is the capital of Italy?", "What is the capital of Canada?",
    "What is the capital of Australia?",
    # yes/no facts
    "Is the sun a star?", "Can penguins fly?", "Is 7 a prime number?",
    "Is the Pacific the largest ocean?", "Is Paris in Germany?", "Do spiders have six legs?",
    # multiple choice
    "Which planet is known as the Red Planet?" + MC.format("Venus", "Mars", "Jupiter", "Saturn"),
    "What is 6 * 7?" + MC.format("36", "48", "42", "56"),
    "Which animal is a mammal?" + MC.format("Shark", "Eagle", "Frog", "Whale"),
    "What gas do plants take in?" + MC.format("Oxygen", "Carbon dioxide", "Helium", "Nitrogen"),
    "How many days are in a week?" + MC.format("5", "6", "7", "8"),
    # opposites
    "What is the opposite of hot?", "What is the opposite of up?",
    "What is the opposite of happy?", "What is the opposite of big?",
    "What is the opposite of early?", "What is the opposite of open?",
]

FEW_SHOT = [
    {"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"},
    {"role": "user", "content": "What is the capital of Spain?"},
    {"role": "assistant", "content": "Madrid"},
    {"role": "user", "content": "Is ice cold?"}, {"role": "assistant", "content": "Yes"},
]


def generate(backend, question: str, temperature: float, few_shot: bool, seed: int) -> str:
    """One candidate's text, made as a worker makes it (the same prompt and stops)."""
    messages = (*(FEW_SHOT if few_shot else ()), {"role": "user", "content": question})
    task = Task(job="cases", cand=0, seed=seed,
                sampling=Sampling(messages=messages, max_tokens=MAX_TOKENS,
                                  temperature=temperature))
    outcome = backend.generate(task, lambda piece: None, threading.Event())
    return outcome.text


@click.command()
def main() -> None:
    from worker.backend import LlamaCppBackend
    from worker.model_files import bundled_model
    backend = LlamaCppBackend(bundled_model(progress=False), n_ctx=1024)
    old = json.loads(OUT.read_text()) if OUT.exists() else []
    labels = {(c["question"], c["text"]): {k: c[k] for k in ("expected", "known_miss") if k in c}
              for c in old}
    cases = []
    with click.progressbar(QUESTIONS, label="Asking the bundled model", file=None) as bar:
        for qi, question in enumerate(bar):
            for temperature in TEMPERATURES:
                for few_shot in (False, True):
                    text = generate(backend, question, temperature, few_shot, seed=qi)
                    case = {"question": question, "temperature": temperature,
                            "few_shot": few_shot, "text": text}
                    case.update(labels.get((question, text), {}))
                    cases.append(case)
    OUT.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    click.echo(f"{len(cases)} cases written to {OUT}")


if __name__ == "__main__":
    main()
