"""``gmai-hf``: one console script, one subcommand per stage.

Each subcommand lives in its own module exposing ``HELP``, ``add_arguments(parser)`` and
``main(args) -> int``; this file only dispatches. Command modules import torch and transformers
inside functions, so building the parser costs only ``import datasets``.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

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


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default unless the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.option_strings
            and action.default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse that shows defaults and, for a misspelt flag, names the closest real one."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        command = next((a for a in argv if a in self.subcommands()), None)
        subparser = self.subcommands().get(command) if command else None
        unknown = [
            a for a in argv[: argv.index("--") if "--" in argv else None] if self.unknown_flag(a, subparser)
        ]
        if unknown:  # before argparse, whose "required" errors would hide the misspelling
            self.unrecognized(unknown, subparser)
        return super().parse_args(argv, namespace)

    def subcommands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._subparsers._group_actions if self._subparsers else ():
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def unknown_flag(self, word: str, subparser: argparse.ArgumentParser | None) -> bool:
        """A ``--flag`` that no parser of this command knows, even as argparse's unambiguous prefix."""
        if not word.startswith("--") or word == "--":
            return False
        name = word.split("=", 1)[0]
        return not any(flag.startswith(name) for flag in self.flags(subparser))

    def flags(self, subparser: argparse.ArgumentParser | None) -> list[str]:
        return [*self._option_string_actions, *(subparser._option_string_actions if subparser else ())]

    def unrecognized(self, words: list[str], subparser: argparse.ArgumentParser | None) -> NoReturn:
        """argparse's "unrecognized arguments" error, naming the closest real flag of each."""
        known = self.flags(subparser)
        hints = []
        for word in words:
            name = word.split("=", 1)[0]
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            close.sort(key=lambda flag: sorted(flag) != sorted(name))  # a swapped pair of letters first
            hints.append(f"{word} (did you mean {close[0]}?)" if close else word)
        (subparser or self).error("unrecognized arguments: " + " ".join(hints))


def add_verbose_argument(parser: argparse.ArgumentParser, default: object = False) -> None:
    """``-v``, accepted before and after the subcommand (after it, SUPPRESS keeps the earlier value)."""
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log debug messages and tracebacks"
    )


#: Libraries that log through a handler of their own and the root's too (every line twice).
OWN_HANDLERS = ("huggingface_hub", "datasets")
#: HTTP clients that log every request at INFO: a line per question in the progress bar.
CHATTY = ("httpx", "httpcore", "openai")


def configure_logging(verbose: bool, main_process: bool = True) -> None:
    """INFO on the main process (WARNING on the others), DEBUG with ``-v``; each line once, and
    HTTP clients' per-request lines only with ``-v``."""
    level = logging.DEBUG if verbose else logging.INFO if main_process else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in OWN_HANDLERS:
        logging.getLogger(name).handlers.clear()
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gmai-hf",
        description="GMAI-MMBench on Hugging Face: prepare the dataset, browse its lexical tree, "
        "evaluate a model, score prediction files and write reports.",
    )
    parser.add_argument("--version", action="version", version=f"gmai-hf {__version__}")
    add_verbose_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        add_verbose_argument(command, default=argparse.SUPPRESS)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
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
