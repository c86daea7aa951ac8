"""Numbers as answers: find them in a text and write them canonically (for broker/extract.py).

A value is a plain decimal string without trailing zeros: "1,250 km" -> "1250", "12.0" ->
"12", "$1,200.50" -> "1200.5", "3/4" -> "0.75", "1 1/2" -> "1.5", "-3" -> "-3",
"twenty-one" -> "21". Units, currency signs and a percent sign are dropped ("75%" ->
"75"). Ordinals ("5th"), digits glued to a letter ("H2O") and digits that run on past 30
are not numbers. Every pattern is linear: no nested repeats.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext

DECIMALS = 6   # a fraction's value is rounded to this many places: "1/3" -> "0.333333"

_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_WORD_VALUES = {**{w: i for i, w in enumerate(_SMALL)}, **_TENS}
_WORD_NUMBER = re.compile(
    rf"(?:(?:twenty|{'|'.join(_TENS)})(?:[- ](?:{'|'.join(_SMALL[1:10])}))?|{'|'.join(_SMALL)})\b",
    re.I)
_NUM = re.compile(
    r"(?<![\w.,/])(-)?[$€£]?"
    r"(?:(\d{1,9})\s(?=\d{1,9}/\d))?"                  # the whole part of "1 1/2"
    r"(\d{1,3}(?:,\d{3})+|\d{1,30})(\.\d{1,30})?(?:/(\d{1,30}))?"
    r"(?!\d|(?:st|nd|rd|th)\b)(\s?%|\s(?:percent|per cent)\b)?", re.I)
# two numbers joined by an operator: an expression, not a result ("100 - 37", "2 + 3")
_EXPRESSION = re.compile(r"\d\s?(?:[-+*×÷]|x\s|/\s)\s?[-$]?\d")
_UNIT = re.compile(r"\s?[^\W\d_]{1,12}\b")


def first_number(span: str) -> tuple[str, str] | None:
    """(value, shown) of the first number in `span`, or of a number word opening it."""
    for match in _NUM.finditer(span):
        value = _value(match)
        if value is not None:
            return value, _shown(span, match)
    word = _WORD_NUMBER.match(span.lstrip())
    if word:
        return _word_value(word.group(0)), word.group(0)
    return None


def last_number(text: str, skip: set[str]) -> tuple[str, str] | None:
    """(value, shown) of the last number in `text` whose value is not in `skip`."""
    last = None
    for match in _NUM.finditer(text):
        value = _value(match)
        if value is not None and value not in skip:
            last = (value, match)
    return (last[0], _shown(text, last[1])) if last else None


def values(text: str) -> list[str]:
    """The values of all numbers in `text`, in order."""
    return [v for v in map(_value, _NUM.finditer(text)) if v is not None]


def is_expression(span: str) -> bool:
    return _EXPRESSION.search(span) is not None


def _shown(text: str, match: re.Match) -> str:
    """The number as written, with a unit word right after it ("1,250 km")."""
    unit = _UNIT.match(text, match.end(), match.end() + 14)
    return (match.group(0) + (unit.group(0) if unit else "")).strip()


def _word_value(words: str) -> str:
    return str(sum(_WORD_VALUES[w] for w in re.split(r"[- ]", words.lower()) if w))


def _value(match: re.Match) -> str | None:
    sign, mixed, whole, decimals, denominator, _percent = match.groups()
    try:
        value = Decimal(whole.replace(",", "") + (decimals or ""))
        if denominator is not None and not decimals and int(denominator) != 0:
            with localcontext() as ctx:
                ctx.prec = 80
                value = value / Decimal(denominator) + Decimal(mixed or 0)
                value = value.quantize(Decimal(1).scaleb(-DECIMALS))
    except (InvalidOperation, ValueError):
        return None
    text = format((-value if sign else value).normalize(), "f")
    return "0" if text in ("-0", "0") else text
