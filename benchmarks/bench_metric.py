"""Scoring 26,000 predictions with every breakdown: ``gmai_hf.scoring.compute`` vs plain pandas.

The questions are synthetic (``gmai_hf.testing.data``), the predictions a realistic mix of free-form
outputs (bare letters, "The answer is X.", option texts, chain-of-thought endings, two letters,
refusals). Every breakdown is computed: the 5 dimensions and the 3 tree views down to category.

- ``end to end``: ours (``scoring.compute``) vs the straightforward pandas way, as VLMEvalKit does
  it: VLMEvalKit's ``can_infer`` applied row by row over a DataFrame (``build_choices`` per row),
  then one ``groupby`` per dimension and per tree level.
- ``aggregation only``: bare-letter predictions through ``scoring.compute`` vs pandas ``groupby`` on
  precomputed hits (no matching at all on the pandas side).

Both sides must produce the same numbers (checked) before any time is printed. Best of ``--repeat``.

Usage: ``python benchmarks/bench_metric.py [--questions 26000] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from gmai_hf import matching, schema, scoring
from gmai_hf.testing.data import make_rows
from gmai_hf.tree import NONE_LABEL

_TEMPLATES = (
    ("{L}", 45),
    ("The answer is {L}.", 15),
    ("({L}) {T}", 8),
    ("{T}", 8),
    ("Looking at the image, the highlighted region is consistent with {T}. Therefore the answer is {L}.", 10),
    ("{L} or {M}", 4),
    ("Cannot determine the answer from this image.", 3),
    ("The image quality is insufficient to decide between these options.", 4),
    ("**Answer:** {L}", 3),
)


def predictions_for(rows: list[dict[str, Any]], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    templates, weights = zip(*_TEMPLATES, strict=True)
    out = []
    for row in rows:
        present = [letter for letter in schema.OPTION_LETTERS if row[letter] is not None]
        letter = row["answer"] if rng.random() < 0.5 else rng.choice(present)
        other = rng.choice([x for x in present if x != letter])
        template = rng.choices(templates, weights)[0]
        out.append(template.format(L=letter, M=other, T=row[rng.choice(present)]))
    return out


def columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    """The metric's inputs as columns (prepared outside the timing, as the DataFrame is)."""
    return {
        "references": [row["answer"] for row in rows],
        "options": [[row[letter] for letter in schema.OPTION_LETTERS] for row in rows],
        **{dim: [row[dim] for row in rows] for dim in schema.BREAKDOWN_DIMENSIONS},
    }


def pandas_groupbys(df: pd.DataFrame) -> dict[str, Any]:
    """Accuracy per dimension and per tree node with plain groupbys of the ``hit`` column."""
    out: dict[str, Any] = {"accuracy": df["hit"].mean(), "by": {}, "tree": {}}
    for dim in schema.BREAKDOWN_DIMENSIONS:
        out["by"][dim] = df.groupby(dim)["hit"].agg(["sum", "count", "mean"])
    for view in schema.TREE_VIEWS:
        out["tree"][view] = [
            df.groupby(levels)["hit"].agg(["sum", "count", "mean"])
            for levels in ([view], [view, "modality"], [view, "modality", "category"])
        ]
    return out


def pandas_end_to_end(df: pd.DataFrame) -> dict[str, Any]:
    def choose(row: pd.Series) -> str:
        choices = {letter: row[letter] for letter in schema.OPTION_LETTERS if not pd.isna(row[letter])}
        return matching.can_infer(row["prediction"], choices) or "Z"

    df = df.copy()
    df["hit"] = (df.apply(choose, axis=1) == df["answer"]).astype(int)
    return pandas_groupbys(df)


def best_of(repeat: int, function: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def check_equal(our: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert abs(our["accuracy"] - theirs["accuracy"]) < 1e-12, (our["accuracy"], theirs["accuracy"])
    for dim, table in theirs["by"].items():
        for value, row in table.iterrows():
            node = our["by"][dim][value]
            assert (node["correct"], node["total"]) == (row["sum"], row["count"]), (dim, value)
    for view, (_, _, leaves) in theirs["tree"].items():
        for (value, modality, category), row in leaves.iterrows():
            node = our["tree"][view][value]["children"][modality]["children"][category]
            assert (node["correct"], node["total"]) == (row["sum"], row["count"]), (view, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=26000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rows = make_rows(args.questions, seed=0, image_size=2, distinct_images=1, reference_every=0)
    for row in rows:
        row.pop("image")
    predictions = predictions_for(rows)
    df = pd.DataFrame(rows).assign(prediction=predictions)
    df["department"] = df["department"].fillna(NONE_LABEL)

    inputs = columns(rows)
    t_ours, our = best_of(args.repeat, lambda: scoring.compute(predictions, **inputs))
    t_pandas, theirs = best_of(args.repeat, lambda: pandas_end_to_end(df))
    check_equal(our, theirs)

    letters = [row["answer"] if i % 2 else "A" for i, row in enumerate(rows)]
    hits = df.assign(hit=[int(p == row["answer"]) for p, row in zip(letters, rows, strict=True)])
    t_ours_agg, our_agg = best_of(args.repeat, lambda: scoring.compute(letters, **inputs))
    t_pandas_agg, theirs_agg = best_of(args.repeat, lambda: pandas_groupbys(hits))
    check_equal(our_agg, theirs_agg)

    print(
        f"{args.questions} questions, 5 dimensions + 3 tree views; best of {args.repeat}; "
        "numbers checked equal"
    )
    print(f"unmatched: {our['unmatched']}, accuracy: {our['accuracy']:.4f}")
    print(f"{'':18}{'ours (s)':>10}{'pandas (s)':>12}{'pandas/ours':>13}")
    for name, a, b in (("end to end", t_ours, t_pandas), ("aggregation only", t_ours_agg, t_pandas_agg)):
        print(f"{name:18}{a:10.3f}{b:12.3f}{b / a:12.1f}x")


if __name__ == "__main__":
    main()
