"""Runner throughput: VLMEvalKit's one-question-at-a-time loop vs batched generate vs likelihood.

Same model, same data, same machine, one run. The loop is what VLMEvalKit does per GPU: decode
the image, apply the processor, generate for one question, next. "batched" is ``gmai-hf run``
(length-grouped batches, images prepared in DataLoader workers); "likelihood" is ``--mode
likelihood`` (one forward pass per batch). Questions/s count answering only (model and dataset
loading excluded for all three), best of ``--repeat`` rounds run in turn, so load from other
processes on a shared machine hits all three alike. Targets: batched >= 4x loop, likelihood
>= 2x batched.

    python benchmarks/bench_runner.py                       # tiny LLaVA on CPU
    python benchmarks/bench_runner.py --model gemma3 --questions 64
    python benchmarks/bench_runner.py --model /path/to/saved/model --batch-size 32   # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="bench-runner-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["HF_DATASETS_CACHE"] = str(WORK / "cache")  # before datasets is imported: it reads it once

import datasets  # noqa: E402
from timing import device, loop_questions_per_s, timed_run  # noqa: E402

from gmai_hf import protocols  # noqa: E402
from gmai_hf.testing.data import write_benchmark  # noqa: E402
from gmai_hf.testing.models import TINY_MODELS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="llava", help=f"a tiny architecture ({', '.join(TINY_MODELS)}) or a path"
    )
    parser.add_argument("--questions", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="default: the runner's default")
    parser.add_argument("--image-size", type=int, default=64, help="side of the synthetic PNG images")
    parser.add_argument(
        "--protocol",
        choices=protocols.PROTOCOLS,
        default=protocols.DEFAULT_PROTOCOL,
        help="vlmevalkit re-encodes every image as VLMEvalKit's JPEG (in the workers); lossless does not",
    )
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best of each method is shown")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the model process (0: torch's default)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    datasets.disable_progress_bars()
    work = WORK
    try:
        model = args.model
        if model in TINY_MODELS:
            model = str(TINY_MODELS[model](work / model))
        data_dir = write_benchmark(
            work / "data", n_val=args.questions, test_parts=(), image_size=args.image_size, seed=1
        )
        common = {
            "limit": args.questions,
            "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens,
            "protocol": args.protocol,
        }
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        loop = batched = likelihood = 0.0
        for round_ in range(args.repeat):
            loop = max(
                loop,
                loop_questions_per_s(model, data_dir, args.questions, args.max_new_tokens, args.protocol),
            )
            out = work / f"batched{round_}"
            batched = max(batched, timed_run(model, data_dir, out, **common)["questions_per_s"])
            out = work / f"likelihood{round_}"
            likelihood = max(
                likelihood, timed_run(model, data_dir, out, mode="likelihood", **common)["questions_per_s"]
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"model {args.model} on {device()}, {args.questions} questions, {args.image_size}px PNG, "
        f"batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, protocol {args.protocol}, "
        f"torch threads {args.threads or 'default'}, best of {args.repeat}"
    )
    table = [
        ("one question at a time (loop)", loop, "1.00x"),
        ("batched generate (gmai-hf run)", batched, f"{batched / loop:.2f}x loop (target >= 4x)"),
        ("likelihood (--mode likelihood)", likelihood, f"{likelihood / batched:.2f}x batched (target >= 2x)"),
    ]
    print(f"{'method':<32} {'questions/s':>11}  ratio")
    for name, speed, ratio in table:
        print(f"{name:<32} {speed:>11.2f}  {ratio}")


if __name__ == "__main__":
    main()
