"""The ``openai`` backend against a real local server: questions/s at concurrency 1 vs N.

Starts ``transformers serve`` on 127.0.0.1 with a tiny random-weight model (``transformers
[serving]``, CPU), writes a synthetic validation split, and runs ``gmai-hf run --backend openai``
on it once per concurrency, in turn, ``--repeat`` rounds (best kept), all in one process and run.
Answers are cut at ``--max-new-tokens`` (random weights rarely stop by themselves).

``transformers serve`` generates one request at a time for vision-language models, so against it
directly concurrency cannot help; ``--latency-ms`` puts a proxy in front that holds every request
that long, as the network and queue of a hosted API do, which is where concurrency pays.

    python benchmarks/bench_openai.py                       # tiny LLaVA, concurrency 1 vs 16
    python benchmarks/bench_openai.py --base-url http://127.0.0.1:8000/v1 --model MODEL --concurrency 1 64 256

With ``--base-url`` it measures a server you started (vLLM, SGLang, ...) instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="bench-openai-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["HF_DATASETS_CACHE"] = str(WORK / "cache")  # before datasets is imported: it reads it once

import datasets  # noqa: E402
from timing import timed_run  # noqa: E402

from gmai_hf.testing.data import write_benchmark  # noqa: E402
from gmai_hf.testing.models import TINY_MODELS  # noqa: E402
from gmai_hf.testing.proxy import FaultProxy  # noqa: E402
from gmai_hf.testing.server import serve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llava", help=f"a tiny architecture ({', '.join(TINY_MODELS)})")
    parser.add_argument("--base-url", help="measure this running server instead of starting one")
    parser.add_argument("--questions", type=int, default=96)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64, help="side of the synthetic PNG images")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best of each is shown")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="added to every request by a proxy (a hosted API's latency)",
    )
    args = parser.parse_args()
    if args.base_url and args.latency_ms:
        parser.error("--latency-ms adds latency in front of the server this script starts, not of --base-url")
    logging.basicConfig(level=logging.ERROR)
    datasets.disable_progress_bars()
    speeds: dict[int, float] = {}
    try:
        data_dir = write_benchmark(
            WORK / "data", n_val=args.questions, test_parts=(), image_size=args.image_size, seed=1
        )
        with contextlib.ExitStack() as stack:
            if args.base_url:
                base_url, model = args.base_url, args.model
            else:
                folder = TINY_MODELS[args.model](WORK / args.model)
                server = stack.enter_context(serve(folder, WORK / "serve.log"))
                base_url, model = server.base_url, server.model
            if args.latency_ms:
                port = int(base_url.rsplit(":", 1)[1].split("/")[0])
                proxy = stack.enter_context(FaultProxy(port, delay_s=args.latency_ms / 1000))
                base_url = proxy.base_url
            for round_ in range(args.repeat):
                for concurrency in args.concurrency:
                    out = WORK / f"c{concurrency}-{round_}"
                    speed = timed_run(
                        model,
                        data_dir,
                        out,
                        backend="openai",
                        limit=args.questions,
                        max_new_tokens=args.max_new_tokens,
                        backend_options={"base_url": base_url, "concurrency": concurrency},
                    )["questions_per_s"]
                    speeds[concurrency] = max(speeds.get(concurrency, 0.0), speed)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    where = args.base_url or f"transformers serve, tiny {args.model}, CPU"
    if args.latency_ms:
        where += f", +{args.latency_ms:g} ms per request (proxy)"
    print(
        f"{where}: {args.questions} questions, {args.image_size}px images, max_new_tokens "
        f"{args.max_new_tokens}, best of {args.repeat}"
    )
    first = args.concurrency[0]
    print(f"{'concurrency':>11} {'questions/s':>12}  ratio")
    for concurrency, speed in speeds.items():
        print(f"{concurrency:>11} {speed:>12.2f}  {speed / speeds[first]:.2f}x concurrency {first}")


if __name__ == "__main__":
    main()
