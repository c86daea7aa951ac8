"""The chat transcript for base models: stops at role labels, strips a leading one."""

from __future__ import annotations

import pytest

from worker.prompt import LabelStripper, stops_for_chat, strip_label, transcript


def stream(pieces: list[str]) -> tuple[list[str], str]:
    """Feed pieces one by one: (what each feed passed on, the whole text passed on)."""
    stripper = LabelStripper()
    out = [stripper.feed(p) for p in pieces]
    return out, "".join(out) + stripper.finish()


def test_the_transcript_ends_on_the_assistant_label():
    text = transcript([{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": " Name three colours. "}])
    assert text == "System: Be brief.\nUser: Name three colours.\nAssistant:"


@pytest.mark.parametrize("label", ["User", "Assistant", "System", "Tool", "Human", "AI",
                                   "Customer", "Agent", "Student", "Q", "A"])
def test_generation_stops_at_any_role_label_that_starts_a_line(label):
    assert f"\n{label}:" in stops_for_chat([])


def test_the_user_stops_are_kept_once_after_the_turn_stops():
    stops = stops_for_chat(["END", "\nUser:"])
    assert stops[-1] == "END" and stops.count("\nUser:") == 1


@pytest.mark.parametrize("text, answer", [
    ("Assistant: Paris", "Paris"),
    (" Assistant: Paris is the capital.", "Paris is the capital."),
    ("Assistant: Assistant: Red, green and blue.", "Red, green and blue."),
    (" Customer: I want red.", "I want red."),
    ("A: 42", "42"),
    (" Paris", " Paris"),                      # no label: the text is untouched
    (" A red apple.", " A red apple."),        # "A" is a label only with its colon
    (" AI is a field of study.", " AI is a field of study."),
    ("Red, blue.\nUser: thanks", "Red, blue.\nUser: thanks"),  # later lines: the stops' job
    ("Assistant:", ""),
    (" Assis", " Assis"),                      # never became a label: given back at the end
])
def test_a_leading_label_is_stripped_and_nothing_else(text, answer):
    assert strip_label(text) == answer


def test_a_label_split_over_streamed_pieces_is_stripped():
    out, text = stream([" Ass", "ist", "ant", ":", " ", "Red", ", green", " and blue."])
    assert text == "Red, green and blue."
    assert out[:5] == ["", "", "", "", ""] and out[5] == "Red"


def test_only_what_could_still_be_a_label_is_held_back():
    out, text = stream([" A", " red", " apple"])
    assert out == ["", " A red", " apple"] and text == " A red apple"
    out, _ = stream([" Paris", " is", " big"])
    assert out == [" Paris", " is", " big"]  # plain answers stream with no delay


def test_after_the_answer_starts_a_label_passes_through():
    out, text = stream([" Hi", " Assistant: hi"])
    assert text == " Hi Assistant: hi"
