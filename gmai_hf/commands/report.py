"""``gmai-hf report RUN_DIR [RUN_DIR ...] [--output-dir O]``: rebuild or compare run reports."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = (
    "write report.md, CSVs (also in VLMEvalKit's layout), PNG plots and unmatched.jsonl from one or more "
    "run folders, side by side"
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="folder written by `gmai-hf run` or `gmai-hf score` (holds results.json and predictions.jsonl)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where to write the report (default: the run folder for one run, ./report for several)",
    )
    parser.add_argument(
        "--no-images",
        action="store_true",
        help="write explorer.html without the question images (no thumbnails, nothing in explorer/)",
    )


def main(args: argparse.Namespace) -> int:
    from gmai_hf.reports import write_reports

    output_dir = args.output_dir or (args.run_dirs[0] if len(args.run_dirs) == 1 else Path("report"))
    try:
        paths = write_reports(args.run_dirs, output_dir, images=not args.no_images)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 2
    print(output_dir / "report.md")
    logger.info("%d files written to %s", len(paths), output_dir)
    return 0
