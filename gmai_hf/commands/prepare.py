"""``gmai-hf prepare``: build the Arrow cache once (so later loads open it in seconds), and with
``--verify`` check the files against the official md5s (so runs on them count as official)."""

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
    parser.add_argument(
        "--num-proc",
        type=int,
        default=None,
        metavar="N",
        help="processes that read the files in parallel: the test split's parts, or byte ranges of one file "
        "(default: one process)",
    )
    parser.add_argument("--cache-dir", help="datasets cache folder (default: HF_DATASETS_CACHE)")
    parser.add_argument("--token", help="Hub token for the gated test files (default: your login)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also compute each file's md5 and compare it with the official one (about 20 s per GB); "
        "the verdict is remembered, and runs on verified files are labelled official",
    )


def verify(data_dir: str | None, splits: list[str]) -> int:
    """md5-check the split files; prints a verdict per file. Returns 0 when all are official."""
    from gmai_hf import download, identity

    status = 0
    for split in splits:
        paths = identity.split_files(split, data_dir)
        expected = len(download.official_names(split))
        if len(paths) < expected:
            print(f"{split}: {len(paths)} of the {expected} official files present")
            status = 1
        for path, official in download.check_files(paths, split).items():
            verdict = {True: "official (md5 matches)", False: "NOT the official file (md5 differs)"}
            print(f"{split}: {path}: {verdict.get(official, 'not an official file name')}")
            status |= official is not True
    return status


def prepare_export(source: str, splits: list[str]) -> int:
    """An export needs no TSV preparation: load its splits (datasets caches them; every load
    checks the shards against ``gmai_hf.json``) and say what they are; ``--verify`` has no TSV to
    hash, the export's record of its source files stands."""
    from gmai_hf import identity
    from gmai_hf.builder import load_export

    for split in splits:
        try:
            ds = load_export(split, source)
        except FileNotFoundError:
            continue
        data = identity.describe(split, None, len(ds), dataset=source)
        verdict = "made from the official files" if data["official"] else "; ".join(data["problems"])
        print(f"{split}: {len(ds)} questions (a Parquet export: {verdict})")
    return 0


def main(args: argparse.Namespace) -> int:
    import datasets

    import gmai_hf  # noqa: F401  (registers the builder)
    from gmai_hf.fingerprints import export_source

    if export_source(args.data_dir) is not None:
        return prepare_export(args.data_dir, list(schema.SPLITS) if args.split == "all" else [args.split])

    builder = datasets.load_dataset_builder(
        "gmai_mmbench", args.split, data_dir=args.data_dir, cache_dir=args.cache_dir, token=args.token
    )
    builder.download_and_prepare(num_proc=args.num_proc)
    for name, info in builder.info.splits.items():
        print(f"{name}: {info.num_examples} questions")
    for name, cache in builder.split_cache_dirs().items():
        print(f"cache ({name}): {cache}")
    config = "" if args.split == "all" else f"{args.split!r}, "
    data_dir = "" if args.data_dir is None else f"data_dir={args.data_dir!r}, "
    print(
        f"load it with: import gmai_hf; datasets.load_dataset('gmai_mmbench', {config}{data_dir}split=...) "
        "(`import gmai_hf` registers the name with datasets)"
    )
    if args.verify:
        splits = list(schema.SPLITS) if args.split == "all" else [args.split]
        return verify(args.data_dir, [split for split in splits if split in builder.info.splits])
    return 0
