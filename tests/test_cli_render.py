"""What swarm-ask draws, as pure logic: the progress rows take whatever the network sends,
and the streamed winner is set right when the vote picks another candidate."""

from __future__ import annotations

import io

import pytest

from client.render import Progress, Streamer


def event(kind: str, cand=0, **extra) -> dict:
    return {"event": kind, "job": "j", "cand": cand, "peer": "w1", "tokens": 0, "text": "",
            **extra}


def test_cancelled_is_a_state_of_its_own():
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress.on_event(event("dispatched"))
    progress.on_event(event("cancelled", tokens=5))
    assert progress.rows[0]["state"] == "cancelled" and progress.rows[0]["tokens"] == 5
    assert "candidate 0 on w1: cancelled, 5 tokens" in out.getvalue()
    progress.on_event(event("cancelled", cand=1, peer=None))  # it never started anywhere
    assert "candidate 1: cancelled, 0 tokens" in out.getvalue()


@pytest.mark.parametrize("odd", [
    {"event": "token", "cand": True, "text": "x"},          # a boolean is no index
    {"event": "token", "cand": "0", "text": "x"},
    {"event": "nonsense", "cand": 0},
    {"event": "token", "cand": 0, "peer": 7, "tokens": "many", "text": ["x"]},
    {"event": "failed", "cand": 0, "peer": None, "tokens": -1, "text": {"a": 1}},
    {"event": "done", "cand": 0, "tokens": 2**40},
    {},
])
def test_progress_takes_odd_events_without_breaking(odd):
    progress = Progress(io.StringIO(), live=False)
    progress.on_event(event("dispatched"))
    progress.on_event(odd)
    row = progress.rows[0]
    assert isinstance(row["peer"], str) and isinstance(row["text"], str)
    assert isinstance(row["tokens"], int) and 0 <= row["tokens"] < 2**31
    progress._table()  # and the live view can still draw it


def final(cand: int, text: str) -> dict:
    return {"winner": {"cand": cand, "peer": "w", "text": text}}


def test_first_streams_the_first_candidate_then_completes_it():
    out = io.StringIO()
    s = Streamer(out, live=True)
    for cand, text in ((1, " Paris"), (0, "Rome"), (1, " is"), (1, " it.")):
        s.on_event(event("token", cand, text=text))
    assert out.getvalue() == "Paris is it."
    assert s.finish(final(1, " Paris is it. Yes.")) is None
    assert out.getvalue() == "Paris is it. Yes.\n"


def test_first_prints_another_winner_whole_with_a_note():
    out = io.StringIO()
    s = Streamer(out, live=True)
    s.on_event(event("token", 2, text="Rome"))
    note = s.finish(final(0, "Paris."))
    assert out.getvalue() == "Rome\nParis.\n"
    assert "candidate 0" in note


def test_shed_tokens_are_made_good_by_the_whole_text():
    out = io.StringIO()
    s = Streamer(out, live=True)
    s.on_event(event("token", 0, text="The sky"))
    s.on_event(event("token", 0, text=" blue."))  # " is" was shed on the way
    note = s.finish(final(0, "The sky is blue."))
    assert out.getvalue().endswith("\nThe sky is blue.\n") and note


def test_other_strategies_print_the_winner_after_the_vote():
    out = io.StringIO()
    s = Streamer(out, live=False)
    s.on_event(event("token", 0, text="ignored"))
    assert s.finish(final(0, "  Paris.\n")) is None and out.getvalue() == "Paris.\n"


def test_peers_table_on_an_80_column_terminal_keeps_the_numbers():
    from rich.console import Console

    from client.peers_view import peers_table
    from tests.test_cli_input import _peer
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    peers_table([_peer("gpu-box-with-a-long-name", True, "x" * 200),
                 _peer("phone", False, "went silent")], console)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "p95 s" in lines[0] and "tok/s" in lines[0]
    assert "2.25" in lines[1] and "42.5" in lines[1]
    assert "lost" in lines[2]


CUDA_PROFILE = {"backend": "llama.cpp", "model": "gemma", "gpu_layers": -1, "hardware": {
    "platform": "linux", "arch": "x86_64", "cores_logical": 32, "ram_total_mb": 131072,
    "gpus": [{"index": 0, "name": "NVIDIA RTX 4090", "vram_total_mb": 24564},
             {"index": 1, "name": "NVIDIA RTX 3060", "vram_total_mb": 12288}]}}


def test_hardware_summary_names_platform_cores_ram_gpus_and_offload():
    from client.peers_view import hardware_summary
    assert hardware_summary(CUDA_PROFILE) == ("linux x86_64, 32 cores, 128.0 GB RAM, "
                                              "NVIDIA RTX 4090 24 GB, NVIDIA RTX 3060 12 GB, "
                                              "all layers on GPU")
    mac = {"gpu_layers": 0, "hardware": {"platform": "macos", "arch": "arm64",
                                         "apple_silicon": True, "chip": "Apple M2 Pro"}}
    assert hardware_summary(mac) == "macos arm64, Apple M2 Pro"


@pytest.mark.parametrize("profile", [{}, {"hardware": None}, {"hardware": [1]},
                                     {"hardware": {"gpus": "many", "cores_logical": True,
                                                   "ram_total_mb": -5, "platform": 7}},
                                     {"hardware": {"gpus": [None, {"name": 3}]}, "gpu_layers": "x"}],
                         ids=repr)
def test_hardware_summary_of_a_strange_profile_is_short_and_never_raises(profile):
    from client.peers_view import hardware_summary
    assert hardware_summary(profile) in ("", "GPU")


def test_peers_show_each_machine_in_lines_and_in_the_table():
    from rich.console import Console

    from client.peers_view import peer_lines, peers_table
    from tests.test_cli_input import _peer
    peer = {**_peer("gpu-box", True, ""), "profile": CUDA_PROFILE}
    assert any("NVIDIA RTX 4090 24 GB" in line for line in peer_lines([peer]))
    out = io.StringIO()
    peers_table([peer], Console(file=out, width=80, force_terminal=True, color_system=None))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert any("hardware" in line for line in lines) and "RTX 4090" in out.getvalue()


# -- issue 8: the explained vote -----------------------------------------------------------

def explained(**vote) -> dict:
    """A FINAL in the shape issue 8 gives it: each candidate says how it voted."""
    def cand(i, peer, text, answer, group, agreed, **extra):
        return {"cand": i, "peer": peer, "ok": True, "state": "done", "text": text,
                "error": None, "latency_s": 1.25 + i, "tokens": 9, "answer": answer,
                "group": group, "score": 0.5 if group == 0 else 0.25, "agreed": agreed,
                "logprob": -0.4, **extra}
    return {"winner": {"cand": 1, "peer": "w2", "text": "It is 42."}, "strategy": "auto",
            "vote": {"method": "majority", "reason": "2 of 4 candidates answered 42",
                     "cancelled": 1, "saved_s": 1.3, **vote},
            "votes": {"0": 0.5, "1": 0.5, "2": 0.25},
            "candidates": [cand(0, "w1", "The answer is 42.", "42", 0, [1]),
                           cand(1, "w2", "It is 42.", "42", 0, [0]),
                           cand(2, "w1", "Let me think about forty-one apples", None, 1, []),
                           {"cand": 3, "peer": "w2", "ok": False, "state": "cancelled",
                            "text": "", "error": "the vote no longer needed it",
                            "latency_s": None, "answer": None, "group": None, "score": None,
                            "agreed": [], "logprob": None},
                           {"cand": 4, "peer": "phone", "ok": False, "state": "failed",
                            "text": "", "error": "peer went silent", "latency_s": 3.0}],
            "usage": {}}


def cells(line: str) -> list[str]:
    return line.split()


def test_the_vote_table_has_a_row_a_candidate_the_winner_marked_then_why():
    from rich.cells import cell_len

    from client.vote_table import vote_table
    lines = vote_table(explained())
    assert cells(lines[0]) == ["cand", "peer", "answer", "group", "score", "agreed", "time",
                               "state"]
    rows = {cells(line)[1] if line.startswith("*") else cells(line)[0]: line
            for line in lines[1:6]}
    assert lines[2].startswith("*") and not any(
        line.startswith("*") for i, line in enumerate(lines[1:6]) if i != 1)
    assert cells(rows["0"]) == ["0", "w1", "42", "0", "0.50", "1", "1.2s", "done"]
    assert cells(rows["1"]) == ["*", "1", "w2", "42", "0", "0.50", "0", "2.2s", "done"]
    assert '"Let me think' in rows["2"] and "0.25" in rows["2"]  # no answer: its text's start
    assert "cancelled: the" in rows["3"]  # and why, as far as it fits
    assert "failed: peer" in rows["4"] and "3.0s" in rows["4"]  # clipped to fit 80
    assert lines[6] == "vote (majority): 2 of 4 candidates answered 42"
    assert lines[7] == "early quorum: 1 cancelled, ~1.3 s saved"
    assert len(lines) == 8 and all(cell_len(line) <= 80 for line in lines)


def test_no_early_quorum_line_when_none_was_cancelled_and_none_without_a_vote():
    from client.vote_table import vote_table
    assert not any("quorum" in line for line in vote_table(explained(cancelled=0)))
    old = explained()
    del old["vote"]
    for c in old["candidates"]:
        for key in ("answer", "group", "score", "agreed"):
            c.pop(key, None)
    lines = vote_table(old)  # a broker before issue 8: the table still reads the votes
    assert len(lines) == 6 and '"The answer is' in lines[1] and "0.50" in lines[1]


@pytest.mark.parametrize("broken", [
    {"candidates": "many"},
    {"candidates": [None, 7, {"cand": True, "peer": ["x"], "answer": 42, "group": -1,
                              "score": float("nan"), "agreed": "all", "latency_s": "1",
                              "state": {"x": 1}, "error": b"bytes", "ok": "yes"}]},
    {"candidates": [{"cand": 0, "peer": "w\x1b[31mred\x1b[0m\u202eevil", "text": "a\x07b\r\nc",
                     "answer": "[/x] [bold]42", "group": 2**40, "score": float("inf"),
                     "agreed": [1, True, -1, "2", 2**40], "latency_s": -5.0}]},
    {"candidates": [{"cand": i, "answer": "\u6771\u4eac" * 500, "error": "x" * 10**6,
                     "peer": "\U0001f468\u200d\U0001f4bb" * 40, "ok": False, "state": "failed"}
                    for i in range(200)]},
    {"vote": "majority"},
    {"vote": {"method": 7, "reason": "\x1b]0;pwned\x07" + "r" * 10**5, "cancelled": -2,
              "saved_s": float("nan")}},
    {"vote": {"method": None, "reason": None, "cancelled": True, "saved_s": "lots"}},
    {"vote": {"cancelled": 2, "saved_s": -1.0}},
    {"winner": None, "votes": [1]},
], ids=lambda b: repr(b)[:40])
def test_the_vote_table_takes_any_final_and_prints_only_short_printable_lines(broken):
    import unicodedata

    from rich.cells import cell_len

    from client.vote_table import vote_table
    result = {**explained(), **broken}
    for width in (80, 200, 20):
        lines = vote_table(result, width)
        for line in lines:
            assert cell_len(line) <= 80 and "\x1b" not in line
            assert not any(unicodedata.category(ch) in ("Cc", "Cf") and ch != "\u200d"
                           for ch in line), repr(line)
    if isinstance(broken.get("candidates"), list) and len(broken["candidates"]) > 64:
        assert "(136 more candidates not shown)" in lines


def test_json_has_the_vote_and_how_each_candidate_voted_as_they_came():
    import json

    from client.render import json_result, plain
    out = json_result(explained())
    assert out["vote"] == explained()["vote"]
    c0 = out["candidates"][0]
    assert (c0["answer"], c0["group"], c0["score"], c0["agreed"], c0["logprob"], c0["state"]) \
        == ("42", 0, 0.5, [1], -0.4, "done")
    assert out["candidates"][4]["answer"] is None  # a key that did not come is null
    odd = {**explained(), "vote": {"reason": b"\xff bytes", "saved_s": float("nan"),
                                   "deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}
    text = json.dumps(plain(json_result(odd)), allow_nan=False)  # strict JSON, no TypeError
    vote = json.loads(text)["vote"]
    assert vote["reason"] == "\ufffd bytes" and vote["saved_s"] is None


def test_markup_and_escapes_in_peer_text_are_drawn_as_written():
    from rich.console import Console

    from client.peers_view import peers_table
    from tests.test_cli_input import _peer
    progress = Progress(io.StringIO(), live=False)
    progress.on_event(event("dispatched", peer="w[/x]"))
    for piece in ("The", " [bold]answer", " is [/]", " \x1b[2J42"):
        progress.on_event(event("token", peer="w[/x]", text=piece))
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=True, color_system=None)
    console.print(progress._table())  # "[/x]" was read as markup: MarkupError
    peers_table([_peer("gpu[/b]", True, "oops [/red]")], console)
    drawn = out.getvalue()
    assert "The [bold]answer is [/] [2J42" in drawn and "w[/x]" in drawn
    assert "gpu[/b]" in drawn and "oops [/red]" in drawn and "\x1b[2J" not in drawn


def test_a_long_reason_wraps_over_a_few_lines_instead_of_being_cut():
    from client.vote_table import vote_table
    reason = ("no two of the 3 answers agreed; 'Paris.' won the tie on peer reliability, "
              "then latency")
    lines = vote_table(explained(reason=reason, cancelled=0))
    at = next(i for i, line in enumerate(lines) if line.startswith("vote ("))
    assert " ".join(line.strip() for line in lines[at:]) == f"vote (majority): {reason}"
    assert all(len(line) <= 80 for line in lines) and lines[at + 1].startswith("  ")
    huge = vote_table(explained(reason="word " * 10**4, cancelled=0))
    assert len(huge) - at == 3 and huge[-1].endswith("\u2026")


def test_the_summary_shows_a_score_only_as_a_number():
    from client.render import summary
    result = {"winner": {"cand": 0, "peer": "w1", "text": "x"}, "strategy": "majority",
              "votes": {"0": "\x1b[2J[bold]"}, "candidates": [{"ok": True}]}
    assert summary(result) == "winner: candidate 0 from w1 (majority score -), 1/1 candidates ok"
    result["votes"] = {"0": 0.5}
    assert "(majority score 0.50)" in summary(result)
