"""``gmai-hf score FILE [--data-dir D] [--split S] [--output-dir O]``: score predictions made elsewhere.

A VLMEvalKit prediction file (``<model>_GMAI-MMBench_VAL.xlsx``, or .tsv/.csv/.json/.jsonl with
``index`` and ``prediction``) is joined with the dataset by index, matched with the same rules as
a run, and written through ``results.write_outputs``, so its folder holds what a run's holds.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from gmai_hf import schema

HELP = (
    "score a prediction file made elsewhere (VLMEvalKit's <model>_GMAI-MMBench_VAL.xlsx, or .tsv/.csv/.json/"
    ".jsonl with index and prediction columns): writes results.json, report.md and plots like a run"
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, metavar="FILE", help="prediction file with 'index' and 'prediction'"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding the official TSVs (default: download them from the Hugging Face Hub)",
    )
    parser.add_argument(
        "--split",
        choices=schema.SPLITS,
        default=None,
        help="split the predictions answer (default: test if the file name says TEST, else validation)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where to write results.json, predictions.jsonl and the report (default: FILE's name minus "
        "its suffix, plus _scored, beside it)",
    )
    parser.add_argument(
        "--matching",
        choices=("vlmevalkit", "strict"),
        default="vlmevalkit",
        help="answer matching: VLMEvalKit's exact rules (the leaderboard's) or the strict variant",
    )


def split_for(path: Path) -> str:
    """The split a file's name points to (VLMEvalKit names test files ``..._TEST...``)."""
    return "test" if "_TEST" in path.name.upper() else "validation"


def load_questions(data_dir: Path | None, split: str) -> list[dict[str, Any]]:
    """The split's rows without images (only text, answers and tree columns are needed)."""
    from gmai_hf.builder import load_split

    return load_split(split, data_dir).remove_columns("image").to_list()


def score(
    path: Path,
    *,
    data_dir: Path | None = None,
    split: str | None = None,
    output_dir: Path | None = None,
    matching: str = "vlmevalkit",
) -> list[Path]:
    """Score the prediction file ``path``; returns the files written (as ``results.write_outputs``)."""
    from gmai_hf import external, results

    started = time.perf_counter()
    split = split or split_for(path)
    if split == "test":
        raise ValueError(
            f"{path}: the test split has no answers (they are hidden), so its predictions cannot be scored "
            "here: score validation predictions (--split validation), or send test predictions to the "
            "benchmark's organisers (a run on the test split writes submission.xlsx)"
        )
    predictions = external.read_predictions(path)
    questions = load_questions(data_dir, split)
    by_index, answered = external.join_with_split(predictions, questions, path=path, split=split)
    if len(answered) < len(questions):
        logger.warning(
            "%s answers %d of the %d %s questions: scoring those only (not comparable with the leaderboard)",
            path,
            len(answered),
            len(questions),
            split,
        )
    records = results.build_records(answered, by_index, matching=matching)
    elapsed = time.perf_counter() - started
    run_info = {
        "model": external.model_name(path),
        "split": split,
        "selection": None
        if len(answered) == len(questions)
        else f"{len(answered)} of {len(questions)} questions (those in {path.name})",
        "processes": None,
        "batch_size": None,
        "mode": "score",
        "prompt": None,
        "matching": matching,
        "source": str(path),
        "wall_time_s": round(elapsed, 3),
        "questions_per_s": round(len(records) / elapsed, 1) if elapsed > 0 else None,
        "versions": results.library_versions(),
    }
    output_dir = output_dir or path.with_name(f"{path.stem}_scored")
    return results.write_outputs(output_dir, records, run_info, split, answered, matching=matching)


def main(args: argparse.Namespace) -> int:
    try:
        paths = score(
            args.file,
            data_dir=args.data_dir,
            split=args.split,
            output_dir=args.output_dir,
            matching=args.matching,
        )
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 2
    report = next(path for path in paths if path.name == "report.md")
    print(report)
    return 0
