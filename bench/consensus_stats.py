"""The accuracy benchmark's maths: offline majority votes, the paired bootstrap, the table."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from bench import consensus_data as data


def majority_key(keys: Sequence[str | None]) -> str | None:
    """The most common extracted answer; ties go to the earliest; None never wins over a key."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(k for k in keys if k is not None and counts[k] == top)


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def bootstrap_gain(a: Sequence[float], b: Sequence[float], draws: int = 2000,
                   seed: int = 8) -> tuple[float, float, float]:
    """Mean of a - b in points and its 95% interval, items resampled in pairs."""
    if len(a) != len(b) or not a:
        raise ValueError("the paired bootstrap needs two equal, non-empty lists")
    diffs = [x - y for x, y in zip(a, b)]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    lo, hi = means[int(0.025 * draws)], means[min(draws - 1, int(0.975 * draws))]
    return 100 * mean(diffs), 100 * lo, 100 * hi


def offline_table(items: Sequence[data.Item], rows: Sequence[dict], ks=(1, 3, 5, 7)) -> str:
    golds = [data.gold_keys(it) for it in items]
    keys = [[data.answer_key(t, it.question) for t in r["samples"]] for it, r in zip(items, rows)]
    gkeys = [data.answer_key(r["greedy"], it.question) for it, r in zip(items, rows)]
    single = [mean([k in g for k in ks_]) for ks_, g in zip(keys, golds)]
    greedy = [float(k in g) for k, g in zip(gkeys, golds)]
    lines = [f"items {len(items)}  single {100 * mean(single):.1f}  greedy {100 * mean(greedy):.1f}"]
    for k in ks:
        if k > len(keys[0]):
            continue
        maj = [float(majority_key(ks_[:k]) in g) for ks_, g in zip(keys, golds)]
        mg = [float(majority_key([gk, *ks_[:k - 1]]) in g) for gk, ks_, g in zip(gkeys, keys, golds)]
        d1, d2 = bootstrap_gain(maj, single), bootstrap_gain(maj, greedy)
        lines.append(f"k={k} maj {100 * mean(maj):.1f} (vs single {d1[0]:+.1f} [{d1[1]:+.1f},{d1[2]:+.1f}]"
                     f" vs greedy {d2[0]:+.1f} [{d2[1]:+.1f},{d2[2]:+.1f}])"
                     f"  maj+greedy-cand {100 * mean(mg):.1f}")
    lines.append("per category single/greedy/maj5: " + ", ".join(
        f"{c} {100 * mean([s for s, it in zip(single, items) if it.category == c]):.0f}/"
        f"{100 * mean([s for s, it in zip(greedy, items) if it.category == c]):.0f}/"
        f"{100 * mean([float(majority_key(k_[:5]) in g) for k_, g, it in zip(keys, golds, items) if it.category == c]):.0f}"
        for c in data.CATEGORIES if any(it.category == c for it in items)))
    return "\n".join(lines)


def _answer(cand: dict, index: int):
    """A pool candidate as broker.voting's Answer, with its logprob."""
    from broker.voting import Answer
    return Answer(index, cand.get("text") or "", float(cand.get("latency_s") or 0.0), 1.0,
                  cand.get("logprob"))


def offline_vote(strategy: str, final: dict, k: int, question: str = "") -> str:
    """The winner's text when `strategy` votes over the first k candidates of a pool job,
    as the broker votes (the question is what extraction reads answers against)."""
    from broker.voting import vote
    cands = sorted(final["candidates"], key=lambda c: c.get("cand", 0))[:k]
    answers = [_answer(c, i) for i, c in enumerate(cands) if c.get("ok")]
    if not answers:
        return ""
    return cands[vote(strategy, answers, question).winner].get("text") or ""


def gain_cell(a: Sequence[float], b: Sequence[float]) -> dict:
    d, lo, hi = bootstrap_gain(a, b)
    return {"points": round(d, 1), "lo": round(lo, 1), "hi": round(hi, 1)}


def table_rows(ks, single, greedy, offline: dict, real: dict) -> list[dict]:
    """One row per (k, method): accuracy, gains vs single and vs greedy, wall time (real jobs)."""
    rows = [{"k": 1, "method": "single sample", "acc": round(100 * mean(single), 1)},
            {"k": 1, "method": "greedy", "acc": round(100 * mean(greedy), 1),
             "vs_single": gain_cell(greedy, single)}]
    for k in ks:
        for (strategy, kk), right in offline.items():
            if kk == k:
                rows.append({"k": k, "method": f"{strategy} (offline)", "acc": round(100 * mean(right), 1),
                             "vs_single": gain_cell(right, single), "vs_greedy": gain_cell(right, greedy)})
        for (strategy, kk), run in real.items():
            if kk == k:
                right = run["right"]
                rows.append({"k": k, "method": f"{strategy} (real job)", "acc": round(100 * mean(right), 1),
                             "vs_single": gain_cell(right, single), "vs_greedy": gain_cell(right, greedy),
                             "wall_mean_s": round(run["wall_mean_s"], 2), "wall_p50_s": round(run["wall_p50_s"], 2),
                             "cancelled": round(run["cancelled_mean"], 2)})
    return rows


def _cell(c: dict | None) -> str:
    return "" if c is None else f"{c['points']:+.1f} [{c['lo']:+.1f}, {c['hi']:+.1f}]"


def format_table(rows: Sequence[dict]) -> str:
    head = f"{'k':>2}  {'method':<20} {'acc %':>6}  {'vs single (95%)':<21} {'vs greedy (95%)':<21} {'wall s mean/p50':<16} cancelled"
    out = [head, "-" * len(head)]
    for r in rows:
        wall = f"{r['wall_mean_s']:.2f}/{r['wall_p50_s']:.2f}" if "wall_mean_s" in r else ""
        out.append(f"{r['k']:>2}  {r['method']:<20} {r['acc']:>6.1f}  {_cell(r.get('vs_single')):<21} "
                   f"{_cell(r.get('vs_greedy')):<21} {wall:<16} {r.get('cancelled', '')}")
    return "\n".join(out)
