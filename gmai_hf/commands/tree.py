"""``gmai-hf tree``: the lexical tree with question counts, drawn in the terminal or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from gmai_hf import schema
from gmai_hf.commands import DATASET_HELP

HELP = "show the lexical tree (task, department or granularity -> modality -> category) with question counts"

_LEVELS = ("value", "modality", "category")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data-dir",
        help="folder holding the official TSVs or a Parquet export (default: the official files from "
        "the Hub)",
    )
    source.add_argument("--dataset", help=DATASET_HELP)
    parser.add_argument(
        "--split", default="validation", choices=schema.SPLITS, help="which split's questions to count"
    )
    parser.add_argument(
        "--view",
        default="clinical_vqa_task",
        choices=schema.TREE_VIEWS,
        help="top level of the tree (default: clinical_vqa_task)",
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=3,
        choices=range(1, len(_LEVELS) + 1),
        help="levels shown: 1 top-level values, 2 + modalities, 3 + categories (default: 3)",
    )
    parser.add_argument("--json", action="store_true", help="print the tree as JSON")


def prune(tree: dict[str, dict[str, Any]], depth: int) -> dict[str, dict[str, Any]]:
    """``tree`` cut below ``depth`` levels."""
    return {
        name: {
            k: (prune(v, depth - 1) if k == "children" else v)
            for k, v in node.items()
            if k != "children" or depth > 1
        }
        for name, node in tree.items()
    }


def draw(tree: dict[str, dict[str, Any]], prefix: str = "") -> Iterator[str]:
    """Lines of ``tree`` in box-drawing characters, each node with its question count."""
    names = list(tree)
    for i, name in enumerate(names):
        last = i == len(names) - 1
        node = tree[name]
        yield f"{prefix}{'└── ' if last else '├── '}{name} ({node['total']})"
        if "children" in node:
            yield from draw(node["children"], prefix + ("    " if last else "│   "))


def main(args: argparse.Namespace) -> int:
    from gmai_hf.builder import load_split
    from gmai_hf.tree import build_tree

    try:
        ds = load_split(args.split, args.data_dir, dataset=args.dataset)
    except (FileNotFoundError, ValueError) as error:
        print(f"gmai-hf tree: cannot load the {args.split} split: {error}", file=sys.stderr)
        return 2
    tree = prune(build_tree(ds, args.view), args.depth)
    if args.json:
        document = {"split": args.split, "view": args.view, "total": len(ds), "children": tree}
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    print(f"GMAI-MMBench {args.split}: {len(ds)} questions by {args.view}")
    for line in draw(tree):
        print(line)
    return 0
