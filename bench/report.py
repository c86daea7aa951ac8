"""How every benchmark shows its numbers: a plain table on stdout, and a PNG plot under
bench/results/ (matplotlib, no display needed).

    table("Relay throughput", ["path", "msgs/s", "ratio"], [["bare", 91000, 1.0], ...])
    plot("relay", "Relay throughput", ["bare", "broker"], {"msgs/s": [91000, 80000]},
         ylabel="messages per second", kind="bar", goal=None)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Print (and return) a right-aligned text table under its title."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def plot(name: str, title: str, x: Sequence, series: Mapping[str, Sequence[float]],
         xlabel: str = "", ylabel: str = "", kind: str = "line", goal: float | None = None,
         logx: bool = False) -> Path:
    """Save bench/results/NAME.png: one line (or one group of bars) per series over x;
    `goal` draws a dashed horizontal line. Returns the file's path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if kind == "bar":
        n = max(1, len(series))
        width = 0.8 / n
        for i, (label, ys) in enumerate(series.items()):
            xs = [j + (i - (n - 1) / 2) * width for j in range(len(x))]
            bars = ax.bar(xs, ys, width, label=label)
            ax.bar_label(bars, labels=[_cell(float(y)) for y in ys], fontsize=7)
        ax.set_xticks(range(len(x)), [str(v) for v in x])
    else:
        for label, ys in series.items():
            ax.plot(list(x), list(ys), marker="o", label=label)
        if logx:
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(x), [str(v) for v in x])
    if goal is not None:
        ax.axhline(goal, color="grey", linestyle="--", linewidth=1, label=f"goal {goal:g}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if len(series) > 1 or goal is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    print(f"plot: {path.relative_to(RESULTS.parents[1])}", flush=True)
    return path
