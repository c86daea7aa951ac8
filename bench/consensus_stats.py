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
