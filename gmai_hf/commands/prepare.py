"""``gmai-hf prepare``: build the Arrow cache once, so later loads open it in seconds."""

from __future__ import annotations

import argparse

from gmai_hf import schema

HELP = "build the dataset's Arrow cache (from --data-dir, or the official files downloaded from the Hub)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="folder holding the official TSVs (default: download from the Hub)"
    )
    parser.add_argument(
        "--split",
        choices=("all", *schema.SPLITS),
        default="all",
        help="which split(s) to prepare; each choice is a configuration of the dataset (default: all)",
    )
    parser.add_argument("--num-proc", type=int, default=None, help="processes (test parts / byte ranges)")
    parser.add_argument("--cache-dir", help="datasets cache folder (default: HF_DATASETS_CACHE)")
    parser.add_argument("--token", help="Hub token for the gated test files (default: your login)")


def main(args: argparse.Namespace) -> int:
    import datasets

    import gmai_hf  # noqa: F401  (registers the builder)

    builder = datasets.load_dataset_builder(
        "gmai_mmbench", args.split, data_dir=args.data_dir, cache_dir=args.cache_dir, token=args.token
    )
    builder.download_and_prepare(num_proc=args.num_proc)
    for name, info in builder.info.splits.items():
        print(f"{name}: {info.num_examples} questions")
    print(f"cache: {builder.cache_dir}")
    config = "" if args.split == "all" else f"{args.split!r}, "
    data_dir = "" if args.data_dir is None else f"data_dir={args.data_dir!r}, "
    print(f"load it with: datasets.load_dataset('gmai_mmbench', {config}{data_dir}split=...)")
    return 0
