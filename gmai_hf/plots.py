"""PNG plots of a report, drawn headless.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through ``pyplot``,
so plotting needs no display, leaves no global figure state behind and works inside any process
(the runner calls it at the end of every run). Inputs are plain dicts prepared by ``reports``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gmai_hf.files import atomic_output
from gmai_hf.tree import NONE_LABEL

DPI = 120
#: Markers for leaderboard reference rows, in order.
REFERENCE_MARKERS: tuple[str, ...] = ("D", "X", "^", "s")


#: The line every plot of synthetic data carries at its top (the label travels with the numbers).
SYNTHETIC_NOTE = "SYNTHETIC SAMPLE: made-up questions and images; these numbers say nothing about a model"


def _save(figure: Figure, path: Path, synthetic: bool = False) -> Path:
    if synthetic:
        figure.suptitle(SYNTHETIC_NOTE, color="#b2182b", fontsize=9, fontweight="bold")
    FigureCanvasAgg(figure)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=DPI)  # constrained layout already fits labels and legends
    return path


def accuracy_bars(
    series: Mapping[str, Mapping[str, Mapping[str, Any]]],
    path: Path,
    *,
    title: str,
    labels: Mapping[str, str] | None = None,
    references: Mapping[str, Mapping[str, float]] | None = None,
    synthetic: bool = False,
) -> Path:
    """Horizontal bars of accuracy (%) per value, runs side by side, with 95% interval whiskers.

    ``series``: run label -> value -> node (``accuracy`` and ``ci95`` as fractions, ``total``);
    ``references``: name -> value -> accuracy (fraction), drawn as markers.
    """
    labels = labels or {}
    references = references or {}
    # Top to bottom alphabetically, questions without a value last.
    values = sorted(
        set().union(*series.values()), key=lambda v: (v == NONE_LABEL, labels.get(v, v).lower()), reverse=True
    )
    n_runs = len(series)
    height = 0.8 / n_runs
    figure = Figure(figsize=(10, 2.0 + len(values) * max(0.32, 0.22 * n_runs)), layout="constrained")
    axes = figure.add_subplot()
    for offset, (run, table) in enumerate(series.items()):
        ys, xs, errors = [], [], [[], []]
        for y, value in enumerate(values):
            node = table.get(value)
            if node is None or node.get("accuracy") is None:
                continue
            accuracy = 100 * node["accuracy"]
            low, high = (100 * bound for bound in node["ci95"]) if node.get("ci95") else (accuracy, accuracy)
            ys.append(y - (offset - (n_runs - 1) / 2) * height)  # first run on top
            xs.append(accuracy)
            errors[0].append(max(0.0, accuracy - low))  # rounding can put a bound a hair past the value
            errors[1].append(max(0.0, high - accuracy))
        axes.barh(ys, xs, height=height * 0.9, xerr=errors, capsize=2, label=run, error_kw={"lw": 0.8})
    for marker, (name, rows) in zip(REFERENCE_MARKERS, references.items(), strict=False):
        points = [(100 * rows[value], y) for y, value in enumerate(values) if value in rows]
        if points:
            axes.scatter(*zip(*points, strict=True), marker=marker, color="black", s=28, zorder=3, label=name)
    if len(series) == 1:
        table = next(iter(series.values()))
        tick_labels = [f"{labels.get(v, v)}  (n={table[v]['total']})" for v in values]
    else:
        tick_labels = [labels.get(v, v) for v in values]
    axes.set_yticks(range(len(values)), tick_labels, fontsize=9)
    axes.set_xlim(0, 100)
    axes.set_xlabel("accuracy (%), whiskers: 95% interval")
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return _save(figure, path, synthetic)


def heatmap(
    rows: Mapping[str, Mapping[str, Mapping[str, Any]]],
    path: Path,
    *,
    title: str,
    synthetic: bool = False,
) -> Path:
    """Accuracy (%) per row x column (e.g. task x modality); each cell shows accuracy and question count.

    ``rows``: row label -> column label -> node (``accuracy`` fraction, ``total``). Empty cells stay blank.
    """
    row_labels = sorted(rows)
    columns = sorted(set().union(*rows.values()))
    grid = [
        [
            100 * rows[r][c]["accuracy"]
            if c in rows[r] and rows[r][c].get("accuracy") is not None
            else math.nan
            for c in columns
        ]
        for r in row_labels
    ]
    figure = Figure(figsize=(2.5 + 0.45 * len(columns), 1.8 + 0.4 * len(row_labels)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    axes.set_facecolor("#eeeeee")
    for i, r in enumerate(row_labels):
        for j, c in enumerate(columns):
            if not math.isnan(grid[i][j]):
                axes.text(
                    j, i, f"{grid[i][j]:.0f}\n{rows[r][c]['total']}", ha="center", va="center", fontsize=6
                )
    axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    axes.set_title(f"{title}\n(cell: accuracy %, questions)", fontsize=10)
    figure.colorbar(image, ax=axes, label="accuracy (%)", fraction=0.03)
    return _save(figure, path, synthetic)


def position_bias(
    counts: Mapping[str, tuple[Counter[str], Counter[str]]],
    path: Path,
    *,
    letters: Sequence[str],
    synthetic: bool = False,
) -> Path:
    """Share of chosen letters against the share of answer letters, with the unmatched share.

    ``counts``: run label -> (chosen letter counts with ``"None"`` for no match, answer letter counts).
    """
    keys = [*letters, "None"]
    bars: list[tuple[str, dict[str, float], dict[str, Any]]] = []
    answer_bars: list[tuple[str, dict[str, float], dict[str, Any]]] = []
    hatch = {"color": "white", "edgecolor": "black", "hatch": "//"}
    for run, (chosen, answers) in counts.items():
        total = sum(chosen.values()) or 1
        unmatched = 100 * chosen.get("None", 0) / total
        bars.append(
            (f"{run}: chosen (unmatched {unmatched:.1f}%)", {k: chosen.get(k, 0) / total for k in keys}, {})
        )
        shares = {k: answers.get(k, 0) / total for k in keys}
        if answers and all(shares != seen for _, seen, _ in answer_bars):
            answer_bars.append((f"answers ({run})", shares, hatch))
    if len(answer_bars) == 1:  # all runs answered the same questions
        answer_bars = [("answers", answer_bars[0][1], hatch)]
    bars = answer_bars + bars
    width = 0.8 / len(bars)
    figure = Figure(figsize=(7 + 0.4 * len(bars), 4.6), layout="constrained")
    axes = figure.add_subplot()
    for i, (label, shares, style) in enumerate(bars):
        xs = [x + (i - (len(bars) - 1) / 2) * width for x in range(len(keys))]
        axes.bar(xs, [100 * shares[k] for k in keys], width=width * 0.95, label=label, **style)
    axes.set_xticks(range(len(keys)), [*letters, "no match"])
    axes.set_ylabel("share of questions (%)")
    axes.set_title("Chosen letters against answer letters (position bias)")
    axes.grid(axis="y", alpha=0.3)
    figure.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _save(figure, path, synthetic)


def difference_forest(
    sections: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]],
    path: Path,
    *,
    title: str,
    synthetic: bool = False,
) -> Path:
    """Per-node differences (points, % points) with their 95% intervals, significant ones highlighted.

    ``sections``: heading -> ``[(node label, comparison node), ...]`` (``difference``, ``ci95``,
    ``significant``, as ``gmai_hf.paired.compare_node`` makes them), drawn top to bottom.
    """
    rows: list[tuple[str, Mapping[str, Any] | None]] = []
    for heading, nodes in sections.items():
        rows.append((heading, None))
        rows += [(f"  {label} (n={node['n']})", node) for label, node in nodes]
    figure = Figure(figsize=(9, 1.5 + 0.24 * len(rows)), layout="constrained")
    axes = figure.add_subplot()
    for y, (_, node) in enumerate(reversed(rows)):
        if node is None:
            continue
        low, high = (100 * bound for bound in node["ci95"])
        color = "tab:red" if node.get("significant") else "0.45"
        axes.plot([low, high], [y, y], color=color, linewidth=1.4)
        axes.plot(100 * node["difference"], y, "o", color=color, markersize=4)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(
        range(len(rows)),
        [label for label, _ in reversed(rows)],
        fontsize=7,
    )
    for tick, (_, node) in zip(axes.get_yticklabels(), reversed(rows), strict=True):
        if node is None:
            tick.set_fontweight("bold")
    axes.set_ylim(-1, len(rows))
    axes.set_xlabel("accuracy difference, % points (95% interval); red: significant after adjustment")
    axes.set_title(title, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, path, synthetic)
