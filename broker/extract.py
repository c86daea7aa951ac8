"""Answer extraction: the short final answer a candidate's text gives, for majority votes.

CONTRACT (the lead's; a helper fills in the body):
    extract(text, question="") -> Extracted | None
`question` is the job's last user message (or prompt); a first line that repeats it is
ignored. None when the text gives no short, extractable answer.

First the lines at the start that echo the question are dropped (the question itself, its
start cut short, the same question with other numbers, and after it its option lines).
Then the answer is looked for; the first rule that finds one wins:
1. an explicit marker, the last in the text: "The answer is X", "Answer: X", "Final answer:
   X", "The answer to ... is X", "Option (b)"; else the last bold span "**X**" that is not a heading;
   else "... = X" on the last line;
2. without one, only the text before any question it goes on to ask ("What is 8 - 2?"):
   "Yes"/"No" opening it; for a yes/no question, a short clause made of the question's own
   words ("7 is a prime number." -> yes; with "not" -> no); an option letter opening it;
   for a question about numbers, the last number the question does not itself hold (or a
   short first clause with one number in it: "The sale price is $25."); else a short first
   line (at most 6 words, 60 characters).
Long prose with none of these gives None: the vote then uses similarity.

Inside the span found: an option letter ("B", "(b)", "C) 42") gives OPTION; yes/no (or
true/false) gives YESNO; a number gives NUMBER (an unevaluated "100 - 37" gives None);
else a short span gives LINE. Where the question lists options ("A) Venus" lines), an
answer equal to an option's text is that option's letter, so "Mars" and "B" agree.

Canonical values, what votes and the benchmark compare through `key`:
- NUMBER: broker/extract_numbers.py. Units are dropped, and so is a percent sign: "75%",
  "75 percent" and "75" are all "75", because the question fixes the unit ("What percent
  of 200 is 50?" is answered "25" as often as "25%"); "0.75" stays apart from "75%"
  (reading 0.75 as 75% would merge slips of a factor 100). "1 250" (a space as thousands
  separator) is two numbers: a space also separates lists.
- OPTION: the upper-case letter A-E. YESNO: "yes" or "no".
- LINE: the answer's words in lower case, without punctuation, articles, filler ("is",
  "it's") and hedges ("I think"), and without words the question already has: asked "What
  is the capital of France?", "The capital of France is Paris." gives "paris", as does a
  bare "Paris". Where only the question's words are left, the words after its last "is"
  ("The opposite of early is early." -> "early"). Only hedges ("I'm not sure") give None.

The work is bounded whatever a peer sends: only the first line's head (HEAD_CHARS) and the
last TAIL_CHARS characters are read, and every pattern is linear (no nested repeats).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker import extract_numbers as num

NUMBER, OPTION, YESNO, LINE = "number", "option", "yesno", "line"

HEAD_CHARS, TAIL_CHARS = 512, 4096
LINE_WORDS, LINE_CHARS = 6, 60       # at most this long is a "short" answer line
LOOSE_WORDS = 40                     # a longer text needs arithmetic for its last number


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
                          "\u2153": "1/3", "\u2154": "2/3", "\u2019": "'",
                          **{0xFF10 + d: str(d) for d in range(10)}})
_MARKER = re.compile(r"\b(?:(?:final\s+)?answer(?:\s+to\s[^.:\n]{1,40}?)?"
                     r"\s*(?:is\s*:?|:|=|would\s+be|will\s+be)|option\s*[:=]?(?=\s*\(?[a-e]\b))"
                     r"[ \t]*", re.I)
_LONE = re.compile(r"\(?([A-Ea-e])\)?[.!]?")  # after a marker, "b" alone is an option too
_BOLD = re.compile(r"\*\*([^*\n]{1,80})\*\*")
_OPTION = re.compile(r"\(?\b([A-E])(?:\)|\.(?!\w)|:|\s*$)|\(([A-Ea-e])\)|^([a-e])\)")
_YESNO = re.compile(r"(yes|no|true|false)\b", re.I)
_YESNO_Q = re.compile(r"\s*(?:is|are|am|was|were|can|could|do|does|did|will|would|should|"
                      r"has|have|had)\b", re.I)
_BULLET = re.compile(r"^[-*#>]+\s+")
_LISTED = re.compile(r"^\d{1,2}[.)]\s+", re.M)
_CUT = re.compile(r"[.!?;](?=\s|$)|,\s|\n")
_ASKS = re.compile(r"\?(?=\s|$)")
_IS = re.compile(r".*\b(?:is|are|was|were)\b")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_Q_OPTION = re.compile(r"^\s*\(?([A-E])[).:]\s*(.+?)\s*$", re.M)
_NUMERIC_Q = re.compile(r"\d|how (?:many|much|far|long|old)|percent|average|total", re.I)
_FILLER = frozenset("a an the is are am was were be it its it's that this these answer of "
                    "to in called named so".split())
_HEDGES = frozenset("i i'm im i've me my you not sure don't dont know think guess maybe "
                    "perhaps sorry hello hi hey well got really just".split())
_NEGATIONS = frozenset("not no never cannot can't isn't aren't don't doesn't won't wasn't "
                       "didn't".split())


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


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _drop_echo(lines: list[str], question: str) -> list[str]:
    """The lines after those at the start that repeat the question."""
    if not question.strip():
        return lines
    stem = next(line for line in question.split("\n") if line.strip())
    forms = (" ".join(_words(question)), " ".join(_words(stem)))
    stem_words = {w for w in _words(stem) if not w.isdigit()}
    restates = not _YESNO_Q.match(question)  # else "7 is a prime number." answers it
    options = {" ".join(_words(f"{k}) {v}")) for k, v in _Q_OPTION.findall(question)}
    q_lines = {" ".join(_words(line)) for line in question.split("\n")} | options
    dropped = 0
    for line in lines:
        norm = " ".join(_words(line))
        said = {w for w in norm.split() if not w.isdigit()}
        asks = line.rstrip("*").endswith("?")
        # the question again, perhaps with other numbers: only its words, most of them
        again = len(said) >= 3 and said <= stem_words and (asks or restates) and \
            len(said) >= (0.5 if asks else 0.8) * len(stem_words)
        echo = norm and (norm in forms or (len(said) >= 3 and forms[0].startswith(norm))
                         or (asks and forms[1] in norm) or again
                         or (dropped and norm in q_lines))
        if not echo:
            break
        dropped += 1
    if dropped == len(lines) and " ".join(_words(lines[-1])) in options:
        dropped -= 1  # "...D) Saturn\n\nB) Mars": the last option line is the answer
    return lines[dropped:]


def _from_marker(lines: list[str], question: str) -> Extracted | None:
    text = "\n".join(lines)
    plain = text.replace("**", "").replace("`", "")
    marks = list(_MARKER.finditer(plain))
    if marks:
        span = _first_clause(plain[marks[-1].end():].lstrip("\n")).strip()
        lone = _LONE.fullmatch(span)
        found = Extracted(OPTION, lone[1].upper(), span) if lone else _classify(span, question)
        if found:
            return found
    bold = [b for b in _BOLD.findall(text) if not b.rstrip().endswith(":")]
    found = _classify(bold[-1], question) if bold else None
    if not found and "=" in lines[-1]:
        found = _classify(_first_clause(lines[-1].rsplit("=", 1)[1]), question)
    return found


def _first_clause(span: str) -> str:
    cut = _CUT.search(span)
    return span[:cut.start()] if cut else span


def _from_loose(lines: list[str], question: str) -> Extracted | None:
    """An answer without a marker, read from the text before any question it asks."""
    text = "\n".join(lines)
    listing = len(_LISTED.findall(text)) >= 2  # "1. A student is given 1500 ..."
    text = _before_asking(_LISTED.sub("", text) if listing else text)
    if not text:
        return None
    first = _BULLET.sub("", text.split("\n", 1)[0].replace("**", ""))
    yes_no = _YESNO.match(first)
    if yes_no and yes_no.group(1).lower() in ("yes", "no"):
        return Extracted(YESNO, yes_no.group(1).lower(), yes_no.group(1))
    short = _short(first) and not first.endswith(":")
    found = _restated(first, question) or (_classify(first, question)
                                           if short and _OPTION.match(first) else None)
    if found:
        return found
    if _NUMERIC_Q.search(question) if question else any(map(str.isdigit, first)):
        return _loose_number(text, first, question, listing)
    return _classify(_first_clause(first) or first, question) if short else None


def _before_asking(text: str) -> str:
    """The text before the first sentence that asks a question."""
    asks = _ASKS.search(text)
    if asks is None:
        return text
    start = max(text.rfind(mark, 0, asks.start()) for mark in ".!\n")
    return text[:start + 1].strip()


def _loose_number(text: str, first: str, question: str, listing: bool) -> Extracted | None:
    """The last number the question does not hold, in a short or arithmetic text; else
    the one number of a short first clause ("The sale price is $25.", "100")."""
    arithmetic = "=" in text or num.is_expression(text)
    if arithmetic or (len(_words(text)) <= LOOSE_WORDS and not listing):
        found = num.last_number(text, set(num.values(question)))
        if found:
            return Extracted(NUMBER, *found)
    clause = _first_clause(first) or first
    if _short(clause) and len(num.values(clause)) == 1:
        return _classify(clause, question)
    if any(map(str.isdigit, first)) or not _short(first):
        return None
    return _classify(first, question)  # a number question answered in words: "a dozen"


def _restated(first: str, question: str) -> Extracted | None:
    """A yes/no question answered by a clause of its own words: "7 is a prime number."."""
    if not _YESNO_Q.match(question):
        return None
    clause = _first_clause(first)
    said = _words(clause)
    known = set(_words(question)) | _FILLER | _NEGATIONS | {"they", "it", "he", "she"}
    if not 3 <= len(said) <= 10 or not set(said) <= known:
        return None
    return Extracted(YESNO, "no" if _NEGATIONS & set(said) else "yes", clause)


def _short(line: str) -> bool:
    """A short answer: a hedge it opens with ("I think ...") does not count against it."""
    words = _WORD.findall(line)
    hedge = next((i for i, w in enumerate(words) if w.lower() not in _HEDGES), len(words))
    lead = len(" ".join(words[:hedge]))
    return len(line) - lead <= LINE_CHARS and len(words) - hedge <= LINE_WORDS


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
    result = span.rsplit("=", 1)[-1]
    if num.is_expression(result):
        return None
    found = num.first_number(result)
    if found:
        return Extracted(NUMBER, *found)
    value = _line_value(span, question) if _short(span) else ""
    return Extracted(LINE, value, _as_written(span, value)) if len(value) > 1 else None


def _as_written(span: str, value: str) -> str:
    """The answer's own words as the text wrote them ("Paris" of "The capital is Paris.")."""
    wanted = value.split()
    words = [w for w in _WORD.findall(span) if w.lower() in wanted]
    return " ".join(words) if len(words) == len(wanted) else span.rstrip(".!?")


def _line_value(span: str, question: str) -> str:
    """A short answer's own words: no filler, no hedges, none the question already has."""
    content = [w for w in _words(span) if w not in _FILLER]
    if not content or set(content) <= _HEDGES:
        return ""
    content = [w for w in content if w == "not" or w not in _HEDGES]
    asked = set(_words(_Q_OPTION.sub("", question)))
    kept = [w for w in content if w not in asked]
    if kept and kept != ["not"]:
        return " ".join(kept)
    after_is = _IS.match(span.lower())
    tail = [w for w in _words(span[after_is.end():]) if w not in _FILLER] if after_is else []
    return " ".join(tail or content)


def _as_option(found: Extracted, question: str) -> Extracted:
    """An answer equal to one of the question's listed options is that option's letter."""
    if found.kind not in (NUMBER, LINE) or "\n" not in question:
        return found
    for letter, option in _Q_OPTION.findall(question):
        number = num.first_number(option) if found.kind == NUMBER and _short(option) else None
        same = number[0] == found.value if number else _line_value(option, question) == found.value
        if same:
            return Extracted(OPTION, letter, found.shown)
    return found
