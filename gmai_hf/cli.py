"""``gmai-hf``: one console script, one subcommand per stage.

Each subcommand lives in its own module exposing ``HELP``, ``add_arguments(parser)`` and
``main(args) -> int``; this file only dispatches. Command modules import torch and transformers
inside functions, so building the parser costs only ``import datasets``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from gmai_hf import __version__

#: subcommand -> module implementing it.
COMMANDS: dict[str, str] = {
    "prepare": "gmai_hf.commands.prepare",
    "info": "gmai_hf.commands.info",
    "tree": "gmai_hf.commands.tree",
    "run": "gmai_hf.run",
    "report": "gmai_hf.commands.report",
    "score": "gmai_hf.commands.score",
    "compare": "gmai_hf.commands.compare",
    "export": "gmai_hf.commands.export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmai-hf",
        description="GMAI-MMBench on Hugging Face: prepare the dataset, browse its lexical tree, "
        "evaluate a model, score prediction files and write reports.",
    )
    parser.add_argument("--version", action="version", version=f"gmai-hf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._module.main(args) or 0)
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as error:  # bad input: our messages say what and where
        if args.verbose:
            raise
        logging.getLogger("gmai_hf").error("%s (run with -v for the traceback)", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
