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

    from client.render import peers_table
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
    from client.render import hardware_summary
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
    from client.render import hardware_summary
    assert hardware_summary(profile) in ("", "GPU")


def test_peers_show_each_machine_in_lines_and_in_the_table():
    from rich.console import Console

    from client.render import peer_lines, peers_table
    from tests.test_cli_input import _peer
    peer = {**_peer("gpu-box", True, ""), "profile": CUDA_PROFILE}
    assert any("NVIDIA RTX 4090 24 GB" in line for line in peer_lines([peer]))
    out = io.StringIO()
    peers_table([peer], Console(file=out, width=80, force_terminal=True, color_system=None))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert any("hardware" in line for line in lines) and "RTX 4090" in out.getvalue()
