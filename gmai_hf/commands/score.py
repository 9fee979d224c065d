"""``gmai-hf score FILE [--data-dir D] [--split S] [--output-dir O]``: score predictions made elsewhere.

A VLMEvalKit prediction file (``<model>_GMAI-MMBench_VAL.xlsx``, or .tsv/.csv/.json/.jsonl with
``index`` and ``prediction``) is joined with the dataset by index, matched with the same rules as
a run, and written through ``results.write_outputs``, so its folder holds what a run's holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from gmai_hf import external, protocols, schema
from gmai_hf.commands import DATASET_HELP
from gmai_hf.results import PREDICTIONS_FILE, RESULTS_FILE
from gmai_hf.run import judge_options

HELP = (
    "score a prediction file made elsewhere (VLMEvalKit's <model>_GMAI-MMBench_VAL.xlsx, or .tsv/.csv/.json/"
    ".jsonl with index and prediction columns): writes results.json, report.md and plots like a run"
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, metavar="FILE", help="prediction file with 'index' and 'prediction'"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding the official TSVs or a Parquet export (default: download the TSVs from the Hub)",
    )
    source.add_argument("--dataset", help=DATASET_HELP)
    parser.add_argument(
        "--split",
        choices=schema.SPLITS,
        default=None,
        help="split the predictions answer (default: what the file says: results.json beside it, a split "
        "column, an empty answer column, or TEST in its name; else validation)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where to write results.json, predictions.jsonl and the report (default: FILE's name minus "
        "its suffix, plus _scored, beside it)",
    )
    add_scoring_arguments(parser)
    from gmai_hf.run import add_judge_arguments

    add_judge_arguments(parser)


def add_scoring_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--matching`` and ``--protocol``: how a prediction file is read (score, compare)."""
    from gmai_hf.matching import MATCHING_MODES

    parser.add_argument(
        "--matching",
        choices=MATCHING_MODES,
        default="vlmevalkit",
        help="answer matching: VLMEvalKit's exact rules of today (the default), of 2024 (vlmevalkit-2024), "
        "or the strict variant",
    )
    parser.add_argument(
        "--protocol",
        choices=protocols.PROTOCOLS,
        default=protocols.DEFAULT_PROTOCOL,
        help="the protocol the predictions were made under: vlmevalkit (option cells pandas reads as missing "
        "were not shown, so they cannot be matched) or lossless (default: vlmevalkit)",
    )


TEST_REFUSAL = (
    "{path}: these are test predictions{how}, and the test split has no answers (they are hidden), so they "
    "cannot be scored: send the submission.xlsx a test run writes to the benchmark's organisers"
)


def detect_split(path: Path, predictions: external.Predictions) -> tuple[str, str] | None:
    """The split the file itself says it answers, and how it says so (None: it does not say)."""
    beside = path.with_name(RESULTS_FILE)
    if path.name == PREDICTIONS_FILE and beside.is_file():
        try:
            split = (json.loads(beside.read_text(encoding="utf-8")).get("run") or {}).get("split")
        except ValueError:
            split = None
        if split in schema.SPLITS:
            return split, f"{beside} says split {split!r}"
    if predictions.split in schema.SPLITS:
        return predictions.split, f"its split column says {predictions.split!r}"
    if predictions.answers_hidden:
        return "test", "its answer column is empty in every row (test answers are hidden)"
    if "_TEST" in path.name.upper():
        return "test", "its name says TEST"
    return None


def load_questions(data_dir: Path | None, split: str, dataset: str | None = None) -> list[dict[str, Any]]:
    """The split's rows without images (only text, answers and tree columns are needed)."""
    from gmai_hf.builder import load_split

    return load_split(split, data_dir, dataset=dataset).remove_columns("image").to_list()


def question_fingerprints(data_dir: Path | None, split: str, dataset: str | None = None) -> dict[int, str]:
    """index -> content fingerprint of every question of the split (images read, not decoded)."""
    from gmai_hf.builder import load_split
    from gmai_hf.fingerprints import dataset_fingerprints

    return dataset_fingerprints(load_split(split, data_dir, dataset=dataset))


def score(
    path: Path,
    *,
    data_dir: Path | None = None,
    split: str | None = None,
    output_dir: Path | None = None,
    matching: str = "vlmevalkit",
    protocol: str = protocols.DEFAULT_PROTOCOL,
    judge: dict[str, Any] | None = None,
    dataset: str | None = None,
) -> list[Path]:
    """Score the prediction file ``path``; returns the files written (as ``results.write_outputs``).

    ``judge``: the LLM judge's settings (``model``, ``base_url``, ``api_key_env``), or None.
    """
    from gmai_hf import identity, results
    from gmai_hf.judge import Judge, judge_settings

    started = time.perf_counter()
    if split == "test":
        raise ValueError(TEST_REFUSAL.format(path=path, how=""))
    predictions = external.read_predictions(path)
    detected = detect_split(path, predictions)
    if split is not None and detected is not None and detected[0] != split:
        raise ValueError(
            f"{path} holds {detected[0]} predictions ({detected[1]}), but --split {split} was given: "
            f"scoring them against {split} answers would give a meaningless number"
        )
    split = split or (detected[0] if detected else "validation")
    if split == "test":
        raise ValueError(TEST_REFUSAL.format(path=path, how=f" ({detected[1]})" if detected else ""))
    questions = [protocols.present_row(row, protocol) for row in load_questions(data_dir, split, dataset)]
    by_index, answered = external.join_with_split(predictions.records, questions, path=path, split=split)
    if len(answered) < len(questions):
        logger.warning(
            "%s answers %d of the %d %s questions: scoring those only (not comparable with the leaderboard)",
            path,
            len(answered),
            len(questions),
            split,
        )
    if predictions.random_picks:
        logger.warning(
            "%s: VLMEvalKit's own scoring drew a random letter for %d question(s) (its judge failed; e.g. "
            "index %s); here they are read from the prediction as written",
            path,
            len(predictions.random_picks),
            ", ".join(map(str, predictions.random_picks[:5])),
        )
    scorer = Judge.from_options(judge, matching_mode=matching)
    content = question_fingerprints(data_dir, split, dataset)
    records = results.build_records(answered, by_index, matching=matching, judge=scorer, fingerprints=content)
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
        "protocol": protocol,
        "matching": matching,
        "judge": judge_settings(judge),
        "vlmevalkit_random_picks": predictions.random_picks or None,
        "source": str(path),
        "wall_time_s": round(elapsed, 3),
        "questions_per_s": round(len(records) / elapsed, 1) if elapsed > 0 else None,
        "versions": results.library_versions(),
    }
    output_dir = output_dir or path.with_name(f"{path.stem}_scored")
    data = identity.describe(split, data_dir, len(questions), dataset=dataset)
    return results.write_outputs(
        output_dir, records, run_info, split, answered, matching=matching, data=data, judge=scorer
    )


def main(args: argparse.Namespace) -> int:
    try:
        paths = score(
            args.file,
            data_dir=args.data_dir,
            split=args.split,
            output_dir=args.output_dir,
            matching=args.matching,
            protocol=args.protocol,
            judge=judge_options(args),
            dataset=args.dataset,
        )
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 2
    report = next(path for path in paths if path.name == "report.md")
    print(report)
    return 0
