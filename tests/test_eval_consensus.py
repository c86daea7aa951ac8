"""The accuracy benchmark's pure parts: the question set, the vote maths, the bootstrap, the
table; and one tiny real run of bench/eval_consensus.py through a real broker and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import consensus_data as data
from bench.consensus_stats import (bootstrap_gain, format_table, majority_key, offline_vote,
                                   table_rows)
from bench.eval_consensus import choose, parse_ks

ROOT = Path(__file__).resolve().parents[1]


def test_question_set_is_big_enough_and_covers_every_category():
    items = data.load()
    assert len(items) >= 150
    counts = {c: sum(it.category == c for it in items) for c in data.CATEGORIES}
    assert all(n >= 20 for n in counts.values()), counts
    assert {it.category for it in items} == set(data.CATEGORIES)
    assert len({it.question for it in items}) == len(items)  # no question twice


def test_every_gold_answer_is_extractable_and_scores_itself():
    for it in data.load():
        assert data.gold_keys(it), it.question
        assert data.is_right(it, it.answer), it.question


def test_few_shot_examples_are_not_in_the_question_set():
    questions = {it.question for it in data.load()}
    assert not questions & {q for shots in data.SHOTS.values() for q, _ in shots}


def test_a_bad_question_line_is_one_clear_error(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"category": "units", "question": "How many?"}\n')
    with pytest.raises(ValueError, match="line 1 is not a question item"):
        data.load(bad)


def test_the_prompt_ends_with_the_question_and_an_answer_label():
    item = data.Item("capitals", "What is the capital of France?", "Paris")
    text = data.prompt(item, "show")
    turns = data.messages(item, "show")
    assert turns[-1] == {"role": "user", "content": item.question}
    assert turns[:2] == ({"role": "user", "content": "What is the capital of Chile?"},
                         {"role": "assistant", "content": "Santiago"})
    assert text.endswith("Q: What is the capital of France?\nA:")
    assert "Q: What is the capital of Chile?\nA: Santiago\n" in text


def test_majority_key_takes_the_most_common_then_the_earliest_and_ignores_none():
    assert majority_key(["number:3", "number:4", "number:4"]) == "number:4"
    assert majority_key(["number:3", "number:4"]) == "number:3"
    assert majority_key([None, None, "line:paris"]) == "line:paris"
    assert majority_key([None, None]) is None


def test_bootstrap_gain_of_a_constant_difference_is_exact():
    gain, lo, hi = bootstrap_gain([1.0] * 10, [0.0] * 10)
    assert (gain, lo, hi) == (100.0, 100.0, 100.0)


def test_bootstrap_interval_holds_the_mean_and_is_reproducible():
    a = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    b = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    gain, lo, hi = bootstrap_gain(a, b)
    assert gain == pytest.approx(37.5)
    assert lo < gain < hi and lo >= -100 and hi <= 100
    assert bootstrap_gain(a, b) == (gain, lo, hi)


def test_bootstrap_refuses_unpaired_lists():
    with pytest.raises(ValueError, match="equal"):
        bootstrap_gain([1.0], [1.0, 0.0])


def test_offline_vote_counts_only_the_first_k_candidates():
    final = {"candidates": [{"cand": i, "ok": True, "text": t, "latency_s": 0.1}
                            for i, t in enumerate([" 12", " 13", " 13", " 12", " 12"])]}
    assert offline_vote("majority", final, 3).strip() == "13"
    assert offline_vote("majority", final, 5).strip() == "12"
    assert offline_vote("majority", {"candidates": [{"cand": 0, "ok": False}]}, 1) == ""


def test_table_rows_give_accuracy_and_paired_gains():
    single, greedy = [0.5, 0.5, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]
    offline = {("majority", 5): [1.0, 1.0, 0.0, 1.0]}
    real = {("auto", 5): {"right": [1.0, 1.0, 1.0, 1.0], "wall_mean_s": 1.5, "wall_p50_s": 1.25,
                          "cancelled_mean": 2.0}}
    rows = table_rows((5,), single, greedy, offline, real)
    by = {r["method"]: r for r in rows}
    assert by["single sample"]["acc"] == 50.0 and by["greedy"]["acc"] == 50.0
    assert by["majority (offline)"]["acc"] == 75.0
    assert by["majority (offline)"]["vs_single"]["points"] == 25.0
    assert by["majority (offline)"]["vs_greedy"]["points"] == 25.0
    assert by["auto (real job)"]["vs_single"]["points"] == 50.0
    text = format_table(rows)
    assert "auto (real job)" in text and "1.50/1.25" in text and "+50.0" in text


def test_choose_spreads_items_over_the_categories():
    chosen = choose(data.load(), 12)
    assert len(chosen) == 12
    assert {it.category for it in chosen} == set(data.CATEGORIES)


@pytest.mark.parametrize("text", ["", "0,3", "a,b", "1,65"])
def test_bad_k_lists_are_refused(text):
    import click
    with pytest.raises(click.BadParameter):
        parse_ks(text)


@pytest.mark.skipif(not os.environ.get("SWARM_BENCH_TEST"),
                    reason="a real bench run takes about a minute on a busy 2-core machine; "
                           "SWARM_BENCH_TEST=1 runs it")
def test_a_tiny_real_run_through_broker_and_workers(tmp_path, model_path):
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "eval_consensus.py"), "--items", "2",
                          "--k", "1,3", "--max-tokens", "8", "--workers", "1", "--no-real",
                          "--json", str(out)], capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr
    assert "majority (offline)" in run.stdout and "greedy" in run.stdout
    report = json.loads(out.read_text())
    assert len(report["items"]) == 2
    assert all(len(it["pool"]) == 3 for it in report["items"])
    assert report["settings"]["ks"] == [1, 3]
