"""Evaluate a vision-language model on GMAI-MMBench: batched, sharded over processes, resumable.

The same flags work as ``gmai-hf run``, ``python -m gmai_hf.run`` and
``accelerate launch [--num_processes N] -m gmai_hf.run`` (or ``torchrun``). Heavy libraries
(torch, transformers) are imported only when a run starts, so ``gmai-hf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gmai_hf import SAMPLE_DIR, protocols, schema
from gmai_hf.backends import BACKENDS, backend_for
from gmai_hf.backends.base import MODES
from gmai_hf.backends.hf import DEVICE_MAPS, DTYPES
from gmai_hf.commands import DATASET_HELP
from gmai_hf.matching import MATCHING_MODES
from gmai_hf.runner import RunConfig

HELP = "evaluate a model (or the random baseline) on GMAI-MMBench, resumably, on any number of processes"

#: ``--flag`` -> ``tree.select`` argument.
SELECTION_FLAGS: dict[str, str] = {
    "--clinical-vqa-task": "clinical_vqa_task",
    "--department": "department",
    "--perceptual-granularity": "perceptual_granularity",
    "--modality": "modality",
    "--category": "category",
    "--keywords": "keywords",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="--backend transformers: an image-text-to-text model (Hub id or local folder) with a chat "
        "template; --backend openai: the model name the server knows; 'random' (any case): the seeded "
        "uniform-guess baseline (the leaderboard's Random row; loads no model)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="transformers",
        help="transformers: the model in this process; openai: any OpenAI-compatible chat-completions "
        "server (vLLM, SGLang, transformers serve, hosted APIs); random: the random baseline "
        "(default: transformers)",
    )
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--data-dir",
        help="folder holding the official TSV files, or a Parquet export of them (default: download the "
        "TSVs from the Hugging Face Hub)",
    )
    data.add_argument("--dataset", help=DATASET_HELP)
    data.add_argument(
        "--sample",
        action="store_true",
        help="use the bundled synthetic sample (gmai_hf/sample; made-up questions): nothing to download",
    )
    parser.add_argument(
        "--split",
        choices=schema.SPLITS,
        default="validation",
        help="validation (answers known: scored) or test (answers hidden: writes submission.xlsx)",
    )
    selection = parser.add_argument_group(
        "selection", "evaluate a slice of the lexical tree (values combine with 'or', flags with 'and')"
    )
    for flag, name in SELECTION_FLAGS.items():
        what = (
            "questions whose text or options contain any of these words (case-insensitive)"
            if name == "keywords"
            else f"questions whose {name.replace('_', ' ')} is one of these (as `gmai-hf tree` names them)"
        )
        selection.add_argument(
            flag, dest=name, nargs="+", action="extend", metavar="VALUE", help=f"{what} (default: all)"
        )
    parser.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="evaluate only the first N selected questions, in index order (default: all)",
    )
    parser.add_argument(
        "--batch-size",
        type=batch_size_arg,
        default=8,
        help="questions per forward pass per process, or auto (start at 64 on a GPU); halved for the rest "
        "of the run on out-of-memory (default 8)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation length limit in --mode generate (default: what the --prompt's VLMEvalKit "
        "wrapper sets for an MCQ dataset, 2048 for most, see docs/prompts.md; a model whose context is "
        "shorter gets what each prompt leaves, said once and recorded in results.json; answers that hit "
        "the limit are counted there)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="generate",
        help="generate: greedy answer text, matched like VLMEvalKit; likelihood: one forward pass, "
        "the present option letter with the highest next-token probability "
        "(no generation, nothing unmatched)",
    )
    parser.add_argument(
        "--prompt",
        default="vlmevalkit",
        help="vlmevalkit: the prompt VLMEvalKit's wrapper for the model's family builds (picked from the "
        "checkpoint's model_type; the dataset's prompt where unknown or with --backend openai); "
        "vlmevalkit:<Wrapper>: that wrapper's (e.g. vlmevalkit:Qwen2VLChat); vlmevalkit-dataset: the "
        "dataset's own 'Question: ... Options: ...' prompt; llava: alias of vlmevalkit:InternVLChat "
        "(see docs/prompts.md)",
    )
    parser.add_argument(
        "--protocol",
        choices=protocols.PROTOCOLS,
        default=protocols.DEFAULT_PROTOCOL,
        help="vlmevalkit: what VLMEvalKit shows a model (images re-encoded as its JPEG files, option cells "
        "pandas reads as missing dropped), comparable with the leaderboard; lossless: original image bytes "
        "and option texts verbatim (default: vlmevalkit)",
    )
    parser.add_argument(
        "--matching",
        choices=MATCHING_MODES,
        default="vlmevalkit",
        help="answer matching: vlmevalkit (today's VLMEvalKit), vlmevalkit-2024 (as when GMAI-MMBench was "
        "added, commit 69268c70) or strict (default: vlmevalkit)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="model weights' dtype (auto: bfloat16 on a GPU that supports it, else float32)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline (default 0)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own Python code from the Hub to run "
        "(off by default: only for models you trust)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        help="DataLoader workers per process that decode and preprocess images (default: from the CPU count)",
    )
    parser.add_argument(
        "--device-map",
        choices=DEVICE_MAPS,
        help="auto: spread one copy of the model over several GPUs (accelerate's big-model inference) "
        "for models larger than one GPU; default: one whole copy per process",
    )
    parser.add_argument(
        "--gpus-per-process",
        type=int,
        metavar="N",
        help="GPUs each process spreads its copy over (implies --device-map auto): 8 GPUs, 2 per process, "
        "`accelerate launch --num_processes 4` run 4 copies (default with --device-map auto: the node's "
        "GPUs shared evenly)",
    )
    add_openai_arguments(parser)
    add_judge_arguments(parser)
    parser.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        help="where answers, predictions.jsonl, results.json, report.md (and submission.xlsx) go; "
        "rerunning the same command resumes there",
    )


def batch_size_arg(value: str) -> int | str:
    """``--batch-size``: a positive number, or ``auto``."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number nor 'auto'") from None


def add_openai_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--backend openai`` flags (see ``gmai_hf.backends.openai``)."""
    from gmai_hf.client import ClientOptions

    defaults = ClientOptions()
    group = parser.add_argument_group("openai backend", "any OpenAI-compatible chat-completions endpoint")
    group.add_argument(
        "--base-url",
        help="the server's /v1 URL (default: $OPENAI_BASE_URL, else https://api.openai.com/v1)",
    )
    group.add_argument(
        "--api-key-env",
        default=defaults.api_key_env,
        metavar="VAR",
        help="environment variable holding the API key (default OPENAI_API_KEY; never logged or saved)",
    )
    group.add_argument(
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help=f"requests in flight per process (default {defaults.concurrency})",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout,
        metavar="S",
        help="seconds a whole request may take, reply body included, before it is abandoned and retried "
        f"(default {defaults.request_timeout:g})",
    )
    group.add_argument(
        "--max-retries",
        type=int,
        default=defaults.max_retries,
        help="retries of a request after 429, 5xx, a timeout, a dropped connection or a malformed reply, "
        f"with exponential backoff (default {defaults.max_retries})",
    )
    group.add_argument(
        "--max-reply-bytes",
        type=int,
        default=defaults.max_reply_bytes,
        metavar="N",
        help="a reply body larger than this is abandoned as it arrives and the question recorded as failed "
        f"(default {defaults.max_reply_bytes})",
    )
    group.add_argument(
        "--max-image-side",
        type=int,
        metavar="PX",
        help="downscale images whose longer side exceeds PX before sending (for APIs that limit image "
        "size; default: send the image as the protocol gives it)",
    )


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """``--judge`` and its endpoint (shared by ``gmai-hf run`` and ``gmai-hf score``)."""
    from gmai_hf.client import ClientOptions

    group = parser.add_argument_group(
        "LLM judge", "VLMEvalKit's judge for answers exact matching cannot read (never a random letter)"
    )
    group.add_argument(
        "--judge",
        metavar="MODEL",
        help="judge model on an OpenAI-compatible endpoint (e.g. gpt-4o-mini, VLMEvalKit's default today; "
        "gpt-3.5-turbo-0125 was its 2024 default); default: no judge, exact matching only",
    )
    group.add_argument(
        "--judge-base-url", help="the judge's /v1 URL (default: $OPENAI_BASE_URL, else OpenAI's API)"
    )
    group.add_argument(
        "--judge-api-key-env",
        default=ClientOptions.api_key_env,
        metavar="VAR",
        help="environment variable holding the judge's API key (default OPENAI_API_KEY)",
    )


def judge_options(args: argparse.Namespace) -> dict[str, str] | None:
    """The judge settings the flags describe (None: no judge)."""
    if not args.judge:
        return None
    options = {"model": args.judge, "api_key_env": args.judge_api_key_env}
    if args.judge_base_url:
        options["base_url"] = args.judge_base_url
    return options


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` the parsed flags describe."""
    selection = {
        name: list(getattr(args, name)) for name in SELECTION_FLAGS.values() if getattr(args, name, None)
    }
    backend = backend_for(args.backend, args.model)
    options = {}
    if backend == "openai":
        options = {
            "base_url": args.base_url,
            "api_key_env": args.api_key_env,
            "concurrency": args.concurrency,
            "request_timeout": args.request_timeout,
            "max_retries": args.max_retries,
            "max_reply_bytes": args.max_reply_bytes,
            "max_image_side": args.max_image_side,
        }
    return RunConfig(
        model=args.model,
        backend=backend,
        backend_options=options,
        protocol=args.protocol,
        matching=args.matching,
        judge=judge_options(args),
        output_dir=args.output_dir,
        data_dir=str(SAMPLE_DIR) if args.sample else args.data_dir,
        dataset=args.dataset,
        split=args.split,
        selection=selection,
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        mode=args.mode,
        prompt=args.prompt,
        dtype=args.dtype,
        seed=args.seed,
        trust_remote_code=args.trust_remote_code,
        num_workers=args.num_workers,
        device_map=args.device_map,
        gpus_per_process=args.gpus_per_process,
    )


def main(args: argparse.Namespace) -> int:
    """Run, ending every failure a user can fix in one line (exit 2), an interrupt in one line (130)."""
    from gmai_hf import runner
    from gmai_hf.processes import OutputLocked, StartupTimeout

    log = logging.getLogger("gmai_hf.run")
    main_process = _is_main_process()
    try:
        config = config_from_args(args)
        return runner.run(config)
    except KeyboardInterrupt:
        if main_process:
            saved = runner.saved_answers(args.output_dir)
            log.error(
                "interrupted: %d answers saved in %s; rerun the same command to resume",
                saved,
                args.output_dir,
            )
        return 130
    except ImportError as error:  # a model whose code needs a package that is not installed
        if main_process:
            log.error("cannot load %s: %s", args.model, _first_line(error))
        return 2
    except (ValueError, OSError, OutputLocked, StartupTimeout) as error:
        # bad flags or data, a model or file that can't be had, a busy output folder; other
        # processes stay quiet: the main process reports their failure too ("process N failed")
        if main_process or isinstance(error, StartupTimeout):
            log.error("%s", error)
        return 2


def _is_main_process() -> bool:
    """Rank 0 of a launch (or a plain process): the one that logs and reports for all."""
    return os.environ.get("RANK", "0") == "0"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m gmai_hf.run`` / ``accelerate launch -m gmai_hf.run``: one process of a run."""
    from gmai_hf.cli import Parser, add_verbose_argument, configure_logging

    parser = Parser(prog="python -m gmai_hf.run", description=HELP)
    add_arguments(parser)
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose, _is_main_process())
    return main(args)


if __name__ == "__main__":
    sys.exit(cli())
