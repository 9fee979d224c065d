"""``gmai-hf export``: the TSVs as a Hub-ready Parquet dataset (and ``--push-to-hub``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gmai_hf import schema

HELP = (
    "write the benchmark as Parquet shards with a dataset card, readable by plain datasets.load_dataset "
    "and the Hub's viewer (optionally upload it)"
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gmai_hf.export import DEFAULT_MAX_SHARD_SIZE

    parser.add_argument(
        "--data-dir", help="folder holding the official TSVs (default: download them from the Hub)"
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="where the export is written")
    parser.add_argument(
        "--split",
        choices=("all", *schema.SPLITS),
        default="all",
        help="which split(s) to export (default: all present)",
    )
    parser.add_argument(
        "--max-shard-size",
        default=DEFAULT_MAX_SHARD_SIZE,
        help=f"largest Parquet file (default {DEFAULT_MAX_SHARD_SIZE}; e.g. 1GB, 256MiB)",
    )
    parser.add_argument("--token", help="Hub token (gated test files, uploading; default: your login)")
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="upload the export to this Hub dataset repository, sending only the files that changed "
        "(default: write the folder only)",
    )
    parser.add_argument("--private", action="store_true", help="create the repository as private")


def main(args: argparse.Namespace) -> int:
    from gmai_hf.export import export, push_to_hub
    from gmai_hf.processes import OutputLocked

    splits = list(schema.SPLITS) if args.split == "all" else [args.split]
    try:
        paths = export(
            args.output_dir,
            data_dir=args.data_dir,
            splits=splits,
            max_shard_size=args.max_shard_size,
            token=args.token,
        )
    except OutputLocked as error:
        logger.error("%s", error)
        return 2
    print(f"{len(paths)} files written to {args.output_dir}")
    print(f"load it with: datasets.load_dataset({str(args.output_dir)!r}) (no gmai_hf import needed)")
    if args.push_to_hub:
        sent = push_to_hub(args.output_dir, args.push_to_hub, private=args.private, token=args.token)
        print(
            f"{args.push_to_hub}: {len(sent['uploaded'])} file(s) uploaded, {len(sent['deleted'])} removed"
            + (" (already up to date)" if not sent["uploaded"] and not sent["deleted"] else "")
        )
    return 0
