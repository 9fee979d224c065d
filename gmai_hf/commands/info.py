"""``gmai-hf info``: what a data directory holds, from the metadata columns only (images are skipped)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gmai_hf import schema
from gmai_hf.commands import DATASET_HELP
from gmai_hf.tree import label

HELP = "count questions per split, task, department, granularity and modality (never decodes images)"

#: Breakdowns shown, in order.
DIMENSIONS: tuple[str, ...] = ("clinical_vqa_task", "department", "perceptual_granularity", "modality")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data-dir",
        help="folder holding the official TSVs or a Parquet export (default: the files already downloaded "
        "from the Hub)",
    )
    source.add_argument("--dataset", help=DATASET_HELP)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def tsv_rows(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """The metadata of every question in ``paths`` (one split's TSVs), images skipped."""
    from gmai_hf.builder import iter_rows

    seen: dict[int, tuple[Path, int]] = {}
    for path in paths:
        yield from iter_rows(path, seen=seen, images=False)


def summarize(rows: Iterable[dict[str, Any]], files: list[str]) -> dict[str, Any]:
    """Counts for one split: questions, per dimension, options-count histogram, answers present."""
    by: dict[str, Counter[str]] = {dimension: Counter() for dimension in DIMENSIONS}
    options: Counter[int] = Counter()
    questions = answered = 0
    for row in rows:
        questions += 1
        answered += row["answer"] is not None
        options[sum(row[letter] is not None for letter in schema.OPTION_LETTERS)] += 1
        for dimension in DIMENSIONS:
            by[dimension][label(row[dimension])] += 1
    return {
        "files": files,
        "questions": questions,
        "answers_present": answered,
        "options_histogram": {str(k): options[k] for k in sorted(options)},
        "by": {dimension: dict(counts.most_common()) for dimension, counts in by.items()},
    }


def export_summary(source: str) -> dict[str, dict[str, Any]]:
    """Counts per split of a Parquet export, from its metadata columns."""
    from gmai_hf.builder import load_export

    summary = {}
    for split in schema.SPLITS:
        try:
            ds = load_export(split, source)
        except FileNotFoundError:
            continue
        summary[split] = summarize(ds.remove_columns("image").to_list(), [source])
    return summary


def main(args: argparse.Namespace) -> int:
    from gmai_hf import identity
    from gmai_hf.fingerprints import export_source

    exported = export_source(args.data_dir, args.dataset)
    if exported is not None:
        summary = export_summary(exported)
    else:
        paths = {split: identity.split_files(split, args.data_dir) for split in schema.SPLITS}
        if not any(paths.values()):
            where = args.data_dir or "the Hugging Face Hub cache"
            print(
                f"no GMAI-MMBench files in {where}; pass --data-dir (a folder with the official TSVs) "
                "or run `gmai-hf prepare` to download them"
            )
            return 1
        summary = {
            split: summarize(tsv_rows(split_paths), [str(path) for path in split_paths])
            for split, split_paths in paths.items()
            if split_paths
        }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for split, info in summary.items():
        answers = info["answers_present"]
        print(f"{split}: {info['questions']} questions in {len(info['files'])} file(s)")
        print(f"  answers present: {answers} of {info['questions']}" + (" (hidden)" if not answers else ""))
        histogram = ", ".join(f"{k} options: {v}" for k, v in info["options_histogram"].items())
        print(f"  {histogram}")
        for dimension, counts in info["by"].items():
            print(f"  per {dimension} ({len(counts)}):")
            for value, count in counts.items():
                print(f"    {count:6d}  {value}")
    return 0
