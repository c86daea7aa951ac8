"""Answer extraction: the short final answer a candidate's text gives, for majority votes.

CONTRACT (the lead's; a helper fills in the body):
    extract(text, question="") -> Extracted | None
`question` is the job's last user message (or prompt); a first line that repeats it is
ignored. None when the text gives no short, extractable answer.

Where the answer is looked for, first hit wins:
1. an explicit marker, the last in the text: "The answer is X", "Answer: X", "Final answer:
   X"; then "**X**" (the last bold span that is not a heading); then "... = X" on the last line;
2. without one: "Yes"/"No" opening the text; a short first line (at most 6 words, 60
   characters: "Paris", "19", "B) Mars", "The capital of France is Paris."); for a question
   about numbers, the last number of the text that the question does not itself contain.
Long prose with none of these gives None: the vote then uses similarity.

Inside the span found: an option letter ("B", "(b)", "C) 42") gives OPTION; yes/no (or
true/false) gives YESNO; a number gives NUMBER; else a short span gives LINE. Where the
question lists options ("A) Venus" lines), an answer equal to an option's text is that
option's letter, so "Mars" and "B" agree.

Canonical values, what votes and the benchmark compare through `key`:
- NUMBER: a plain decimal without trailing zeros: "1,250 km" -> "1250", "12.0" -> "12",
  "$1,200.50" -> "1200.5", "3/4" and "¾" -> "0.75", "−3" (U+2212) -> "-3", "twelve" -> "12"
  (words zero to twenty, the tens and "twenty-one" forms). Units are dropped, and so is a
  percent sign: "75%", "75 percent" and "75" are all "75", because the question fixes the
  unit ("What percent of 200 is 50?" is answered "25" as often as "25%"), while "0.75" stays
  apart from "75%" (reading 0.75 as 75% would also merge "0.5 kg" with "50 g"-style slips).
  "1 250" (a space as thousands separator) is two numbers: a space also separates lists.
- OPTION: the upper-case letter A-E. YESNO: "yes" or "no".
- LINE: the answer's words in lower case, without punctuation, articles, filler ("is",
  "it", ...) and words the question already has: "The capital of France is Paris." asked
  "What is the capital of France?" gives "paris", as does a bare "Paris".

The work is bounded whatever a peer sends: only the first line's head (HEAD_CHARS) and the
last TAIL_CHARS characters are read, and every pattern is linear (no nested repeats).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext

NUMBER, OPTION, YESNO, LINE = "number", "option", "yesno", "line"

HEAD_CHARS, TAIL_CHARS = 512, 4096
LINE_WORDS, LINE_CHARS = 6, 60       # at most this long is a "short" answer line
DECIMALS = 6                         # a fraction's value is rounded to this many places


@dataclass(frozen=True, slots=True)
class Extracted:
    kind: str    # NUMBER | OPTION | YESNO | LINE
    value: str   # canonical, what votes compare: "1250", "0.75", "B", "yes", "paris"
    shown: str   # as the text wrote it, for people: "1,250 km", "3/4", "(B)", "Yes", "Paris"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"


_UNICODE = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2044": "/", "\u2215": "/",
                          "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": "",
                          "\u00bd": "1/2", "\u00bc": "1/4", "\u00be": "3/4",
                          "\u2153": "1/3", "\u2154": "2/3",
                          **{0xFF10 + d: str(d) for d in range(10)}})
_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_WORD_VALUES = {**{w: i for i, w in enumerate(_SMALL)}, **_TENS, "twenty": 20}
_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_WORD_NUMBER = re.compile(
    rf"\b(?:(?:twenty|{'|'.join(_TENS)})(?:[- ](?:{_UNITS}))?|{'|'.join(_SMALL)})\b", re.I)
# one number token: sign, currency, digits with optional thousands groups, decimals, an
# optional fraction part and an optional percent; digits never follow a letter ("H2O")
_NUM = re.compile(r"(?<![\w.,/])(-)?[$€£]?(\d{1,3}(?:,\d{3})+|\d{1,30})(\.\d{1,30})?"
                  r"(?:/(\d{1,30}))?(?!\d)(\s?%|\s(?:percent|per cent)\b)?", re.I)
_MARKER = re.compile(r"\b(?:final\s+)?answer\s*(?:is\s*:?|:|=|would\s+be|will\s+be)[ \t]*",
                     re.I)
_BOLD = re.compile(r"\*\*([^*\n]{1,80})\*\*")
_OPTION = re.compile(r"\(?\b([A-E])(?:\)|\.(?!\w)|:|\s*$)|\(([A-Ea-e])\)|^([a-e])\)")
_YESNO = re.compile(r"(yes|no|true|false)\b", re.I)
_BULLET = re.compile(r"^[-*#>]+\s+")
_CUT = re.compile(r"[.!?;](?=\s|$)|,\s|\n")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_Q_OPTION = re.compile(r"^\s*\(?([A-E])[).:]\s*(.+?)\s*$", re.M)
_NUMERIC_Q = re.compile(r"\d|how (?:many|much|far|long|old)|percent|average|total", re.I)
_FILLER = frozenset("a an the is are was were it its it's that this answer be of to in "
                    "called named so".split())


def extract(text: str, question: str = "") -> Extracted | None:
    if not isinstance(text, str) or not text.strip():
        return None
    question = _clean(question[-TAIL_CHARS:] if isinstance(question, str) else "")
    lines = _drop_echo(_bounded(text), question)
    if not lines:
        return None
    found = _from_marker(lines, question) or _from_loose(lines, question)
    return _as_option(found, question) if found else None


def _clean(text: str) -> str:
    return text.translate(_UNICODE).replace("\r", "")


def _bounded(text: str) -> list[str]:
    """The lines to read: the whole text, or its first line's head and its tail."""
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS].split("\n", 1)[0] + "\n" + text[-TAIL_CHARS:].split("\n", 1)[-1]
    return [s for s in (line.strip() for line in _clean(text).split("\n")) if s]


def _norm_words(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _drop_echo(lines: list[str], question: str) -> list[str]:
    """Lines at the start that repeat the question (and, after it, its option lines)."""
    q = _norm_words(question)
    if not q:
        return lines
    q_lines = {_norm_words(line) for line in question.split("\n")} - {""}
    dropped = 0
    while dropped < len(lines) - 1:  # the last line stays: it may be the answer
        line = _norm_words(lines[dropped].strip("*#> "))
        asks = lines[dropped].rstrip("*").endswith("?") and line and (line in q or q in line)
        if not (line == q or asks or (dropped and line in q_lines)):
            break
        dropped += 1
    return lines[dropped:]


def _from_marker(lines: list[str], question: str) -> Extracted | None:
    text = "\n".join(lines)
    plain = text.replace("**", "").replace("`", "")
    marks = list(_MARKER.finditer(plain))
    if marks:
        span = plain[marks[-1].end():].lstrip("\n")
        found = _classify(_first_clause(span), question)
        if found:
            return found
    for bold in reversed(_BOLD.findall(text)):
        if not bold.rstrip().endswith(":"):
            return _classify(bold, question)
    if "=" in lines[-1]:
        return _classify(_first_clause(lines[-1].rsplit("=", 1)[1]), question)
    return None


def _first_clause(span: str) -> str:
    cut = _CUT.search(span)
    return span[:cut.start()] if cut else span


def _from_loose(lines: list[str], question: str) -> Extracted | None:
    first = _BULLET.sub("", lines[0].replace("**", ""))
    yes_no = _YESNO.match(first)
    if yes_no and yes_no.group(1).lower() in ("yes", "no"):
        return Extracted(YESNO, yes_no.group(1).lower(), yes_no.group(1))
    short = _short(first) and not first.endswith(":")
    option = _OPTION.match(first) if short else None
    if option:
        return _classify(first, question)
    if _NUMERIC_Q.search(question) if question else any(map(str.isdigit, first)):
        found = _last_number("\n".join(lines), _numbers_in(question))
        if found or not (short and len(_WORD.findall(first)) <= 2):
            return found  # a lone "42" may still be a number the question holds
    return _classify(_first_clause(first) or first, question) if short else None


def _short(line: str) -> bool:
    return len(line) <= LINE_CHARS and len(_WORD.findall(line)) <= LINE_WORDS


def _classify(span: str, question: str) -> Extracted | None:
    """What one answer span says: an option, yes/no, a number, or a short line."""
    span = span.strip().strip("*_`\"'“”[]").strip()
    if not span:
        return None
    option = _OPTION.match(span)
    if option:
        letter = next(g for g in option.groups() if g)
        return Extracted(OPTION, letter.upper(), option.group(0).strip())
    yes_no = _YESNO.match(span)
    if yes_no:
        word = yes_no.group(1).lower()
        return Extracted(YESNO, {"true": "yes", "false": "no"}.get(word, word), yes_no.group(1))
    number = _first_number(span.rsplit("=", 1)[-1])
    if number:
        return number
    if _short(span):
        value = _line_value(span, question)
        return Extracted(LINE, value, span.rstrip(".!?")) if value else None
    return None


def _line_value(span: str, question: str) -> str:
    words = [w.replace("’", "'") for w in _WORD.findall(span.lower())]
    asked = set(_WORD.findall(_Q_OPTION.sub("", question).lower()))
    kept = [w for w in words if w not in _FILLER and w not in asked]
    return " ".join(kept or [w for w in words if w not in _FILLER] or words)


def _first_number(span: str) -> Extracted | None:
    match = _NUM.search(span)
    if match:
        value = _number_value(match)
        if value is not None:
            return Extracted(NUMBER, value, _shown(span, match))
    word = _WORD_NUMBER.search(span)
    if word and word.start() == len(span) - len(span.lstrip()):
        return Extracted(NUMBER, _word_value(word.group(0)), word.group(0))
    return None


def _shown(span: str, match: re.Match) -> str:
    """The number as written, with a unit word right after it ("1,250 km")."""
    unit = re.match(r"\s?[^\W\d_]{1,12}\b", span[match.end():match.end() + 14])
    return (match.group(0) + (unit.group(0) if unit else "")).strip()


def _word_value(words: str) -> str:
    return str(sum(_WORD_VALUES[w] for w in re.split(r"[- ]", words.lower()) if w))


def _number_value(match: re.Match) -> str | None:
    sign, whole, decimals, denominator, _percent = match.groups()
    try:
        value = Decimal((sign or "") + whole.replace(",", "") + (decimals or ""))
        if denominator is not None and not decimals and int(denominator) != 0:
            with localcontext() as ctx:
                ctx.prec = 40
                value = (value / Decimal(denominator)).quantize(Decimal(1).scaleb(-DECIMALS))
    except (InvalidOperation, ValueError):
        return None
    return _canonical(value)


def _canonical(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _numbers_in(question: str) -> set[str]:
    values = (_number_value(m) for m in _NUM.finditer(question))
    return {v for v in values if v is not None}


def _last_number(text: str, skip: set[str]) -> Extracted | None:
    last = None
    for match in _NUM.finditer(text):
        value = _number_value(match)
        if value is not None and value not in skip:
            last = (match, value)
    if last is None:
        return None
    match, value = last
    return Extracted(NUMBER, value, _shown(text, match))


def _as_option(found: Extracted, question: str) -> Extracted:
    """An answer equal to one of the question's listed options is that option's letter."""
    if found.kind not in (NUMBER, LINE) or "\n" not in question:
        return found
    for letter, option in _Q_OPTION.findall(question):
        number = _first_number(option) if found.kind == NUMBER else None
        same = (number.value == found.value if number and _short(option)
                else _line_value(option, question) == found.value)
        if same:
            return Extracted(OPTION, letter, found.shown)
    return found
