"""``gmai-hf compare RUN_A RUN_B``: is A really better than B, and where? (see ``gmai_hf.compare``)."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from gmai_hf import paired
from gmai_hf.commands import DATASET_HELP

HELP = (
    "paired comparison of two runs (run folders, or prediction files gmai-hf score accepts): per node of "
    "the tree, the difference with its interval, McNemar's exact test, adjusted for the many nodes"
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gmai_hf.commands import score

    parser.add_argument("run_a", type=Path, metavar="RUN_A", help="run folder or prediction file of model A")
    parser.add_argument("run_b", type=Path, metavar="RUN_B", help="run folder or prediction file of model B")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("comparison"), help="where to write (default: ./comparison)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=paired.ALPHA,
        help=f"significance level after the Benjamini-Hochberg adjustment (default {paired.ALPHA:g})",
    )
    files = parser.add_argument_group(
        "prediction files", "how a prediction file (not a run folder) is scored"
    )
    source = files.add_mutually_exclusive_group()
    source.add_argument("--data-dir", type=Path, help="the official TSVs or an export (default: the Hub)")
    source.add_argument("--dataset", help=DATASET_HELP)
    score.add_scoring_arguments(files)


def main(args: argparse.Namespace) -> int:
    from gmai_hf.commands import score
    from gmai_hf.compare import write_comparison

    if not 0 < args.alpha < 1:
        logger.error("--alpha must be between 0 and 1, got %s", args.alpha)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="gmai-hf-compare-") as scratch:
            runs = []
            for name, source in (("a", args.run_a), ("b", args.run_b)):
                if source.is_file():  # a prediction file: scored like `gmai-hf score` first
                    folder = Path(scratch) / name
                    score.score(
                        source,
                        data_dir=args.data_dir,
                        output_dir=folder,
                        matching=args.matching,
                        protocol=args.protocol,
                        dataset=args.dataset,
                    )
                    source = folder
                runs.append(source)
            paths = write_comparison(runs[0], runs[1], args.output_dir, args.alpha)
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 2
    print(next(path for path in paths if path.name == "comparison.md"))
    return 0
