"""CSV outputs: our long-format tables, VLMEvalKit's result layout, and unmatched.jsonl."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gmai_hf import schema
from gmai_hf.files import open_atomic
from gmai_hf.reports.records import (
    VLMEVALKIT_DATASET,
    VLMEVALKIT_MISSING,
    Run,
    _interval,
    breakdown,
    overall_interval,
    unmatched_records,
)
from gmai_hf.tree import NONE_LABEL

#: What makes a spreadsheet read a cell as a formula (OWASP's CSV-injection advice).
FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` safe to open in a spreadsheet: text that starts like a formula (a label or model
    name such as ``=HYPERLINK(...)``) gets a leading apostrophe, so it shows as text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeCsvWriter:
    """``csv.writer`` whose rows pass through :func:`csv_cell`."""

    def __init__(self, handle: Any, **options: Any) -> None:
        self._writer = csv.writer(handle, **options)

    def writerow(self, row: Sequence[Any]) -> None:
        self._writer.writerow([csv_cell(value) for value in row])


def write_dimension_csvs(runs: Sequence[Run], output_dir: Path) -> list[Path]:
    """``accuracy_by_<dimension>.csv`` (long format: one row per run and value) plus ``summary.csv``."""
    paths = []
    summary = output_dir / "summary.csv"
    with open_atomic(summary, newline="") as handle:
        writer = SafeCsvWriter(handle)
        writer.writerow(
            ("run", "model", "split", "accuracy", "ci95_low", "ci95_high", "correct", "total", "unmatched")
        )
        for run in runs:
            low, high = overall_interval(run) or (None, None)
            writer.writerow(
                (
                    run.label,
                    run.model,
                    run.split,
                    run.results.get("accuracy"),
                    low,
                    high,
                    run.results.get("correct"),
                    run.results.get("total"),
                    run.results.get("unmatched"),
                )
            )
    paths.append(summary)
    for dimension in schema.BREAKDOWN_DIMENSIONS:
        path = output_dir / f"accuracy_by_{dimension}.csv"
        with open_atomic(path, newline="") as handle:
            writer = SafeCsvWriter(handle)
            writer.writerow(("run", dimension, "accuracy", "ci95_low", "ci95_high", "correct", "total"))
            for run in runs:
                for value, node in sorted(breakdown(run, dimension).items()):
                    low, high = _interval(node) or (None, None)
                    writer.writerow(
                        (run.label, value, node["accuracy"], low, high, node["correct"], node["total"])
                    )
        paths.append(path)
    return paths


def write_vlmevalkit_csvs(run: Run, output_dir: Path, stem: str) -> list[Path]:
    """VLMEvalKit's result CSVs for a validation run, so tooling that reads them keeps working.

    Layout followed (open-compass/VLMEvalKit): ``vlmeval/dataset/utils/multiple_choice.py``
    ``report_acc`` for ``<model>_GMAI-MMBench_VAL_acc.csv`` (columns ``split``, ``Overall``, then one
    per ``category``, sorted) and ``vlmeval/dataset/image_mcq.py`` ``GMAIMMBenchDataset.report_acc_by_groups``
    for ``..._<group>_acc.csv`` with group ``clinical vqa task``, ``department``, ``perceptual
    granularity`` (``split``, ``Overall``, one column per value, sorted, a missing value named
    ``None``). One row, ``split`` = ``none`` (the TSV has no split column), accuracies as fractions
    0..1, written by ``dump`` -> ``to_csv(index=False, quoting=csv.QUOTE_ALL)``. One deviation:
    VLMEvalKit's ``None`` column is empty (its filter never matches a missing value); ours holds
    the accuracy of those questions.
    """
    files = {"": "category"}
    files.update({f"_{schema.VLMEVALKIT_NAME[group]}": group for group in schema.TREE_VIEWS})
    paths = []
    for suffix, dimension in files.items():
        table = {
            VLMEVALKIT_MISSING if value == NONE_LABEL else value: node["accuracy"]
            for value, node in breakdown(run, dimension).items()
        }
        header = ["split", "Overall", *sorted(table)]
        row = ["none", run.results["accuracy"], *(table[value] for value in sorted(table))]
        path = output_dir / f"{stem}_{VLMEVALKIT_DATASET}{suffix}_acc.csv"
        with open_atomic(path, newline="") as handle:
            writer = SafeCsvWriter(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
            writer.writerow(header)
            writer.writerow(row)
        paths.append(path)
    return paths


def write_unmatched(runs: Sequence[Run], path: Path) -> Path:
    """``unmatched.jsonl``: every prediction no option was extracted from (with its run, if several)."""
    with open_atomic(path) as handle:
        for run in runs:
            for record in unmatched_records(run):
                if len(runs) > 1:
                    record = {"run": run.label, **record}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
