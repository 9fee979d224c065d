"""Real-size models on the GPU present: questions/s and the projected time for the full VAL split.

Nothing can be downloaded, so each model is built from its real configuration with random weights
(MedGemma-4B: a Gemma 3 4B configuration; Qwen2.5-VL-7B), in bfloat16, straight on the GPU, and
saved; questions are a synthetic VAL subset with images of realistic sizes (512 to 1024 px noise
PNGs). For each model, in one run:

- ``loop``: one question at a time (VLMEvalKit's way), through the backend directly;
- ``batched``: ``gmai-hf run`` (``--batch-size``, DataLoader workers);
- ``likelihood``: ``gmai-hf run --mode likelihood``;
- ``openai``: ``gmai-hf run --backend openai`` against ``transformers serve --continuous-batching``
  on the same GPU (if that server starts: it batches text-only models only).

Generation is cut at ``--max-new-tokens`` (random weights never stop early), so every method
generates the same number of tokens. Questions/s count answering only (loading excluded); the
full-split time is projected as 4,550 / questions/s. Peak GPU memory (``torch.cuda``) and mean GPU
utilisation (``nvidia-smi``, sampled every 0.2 s) are recorded per method. A table is printed and
``--json`` written. ``--tiny`` runs the same code on the CPU with the tiny test models in about a
minute (``tests/test_performance.py`` runs it, and ``--dry-run``).

    python benchmarks/bench_gpu.py --json gpu.json                 # on a GPU machine, ~8 min on an H100
    python benchmarks/bench_gpu.py --tiny --json tiny.json         # CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WORK = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # one JSON line per method instead of progress bars
os.environ["HF_DATASETS_CACHE"] = str(WORK / "cache")  # before datasets is imported: it reads it once

import datasets  # noqa: E402
from timing import device, loop_questions_per_s, timed_run  # noqa: E402

from gmai_hf import schema  # noqa: E402
from gmai_hf.backends import Backend  # noqa: E402
from gmai_hf.run import batch_size_arg  # noqa: E402
from gmai_hf.testing.data import encode_image, make_image, make_rows, write_tsv  # noqa: E402
from gmai_hf.testing.models import TINY_MODELS  # noqa: E402

#: Real configurations (the published checkpoints' sizes), applied over the tiny builders' configs.
PRESETS: dict[str, dict[str, Any]] = {
    "medgemma-4b": {
        "tiny": "gemma3",
        "text": {
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "num_hidden_layers": 34,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "vocab_size": 262208,
            "sliding_window": 1024,
            "query_pre_attn_scalar": 256,
            "max_position_embeddings": 131072,
            # five sliding-window layers, then one global, as in the checkpoint
            "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(34)],
        },
        "vision": {
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 896,
            "patch_size": 14,
        },
        "top": {"mm_tokens_per_image": 256},
        "image_processor": {"size": {"height": 896, "width": 896}},
        "processor": {"image_seq_length": 256},
    },
    "qwen2.5-vl-7b": {
        "tiny": "qwen2_5_vl",
        "text": {
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "max_position_embeddings": 128000,
            "layer_types": ["full_attention"] * 28,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [16, 24, 24],
            },
        },
        "vision": {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        "image_processor": {"min_pixels": 3136, "max_pixels": 12845056},
    },
}


def real_config(name: str, folder: Path) -> Any:
    """The preset's real-size configuration; its processor (tokenizer, template, image sizes) saved in
    ``folder``."""
    from transformers import AutoConfig, AutoProcessor

    preset = PRESETS[name]
    TINY_MODELS[preset["tiny"]](folder)  # the processor, tokenizer and template; the model is replaced
    config = AutoConfig.from_pretrained(folder)
    for part, updates in (("text_config", preset["text"]), ("vision_config", preset["vision"])):
        sub = getattr(config, part)
        for key, value in updates.items():
            setattr(sub, key, value)
    for key, value in preset.get("top", {}).items():
        setattr(config, key, value)
    processor = AutoProcessor.from_pretrained(folder)
    for key, value in preset.get("image_processor", {}).items():
        setattr(processor.image_processor, key, value)
    for key, value in preset.get("processor", {}).items():
        setattr(processor, key, value)
    processor.save_pretrained(folder)
    return config


def build_real(name: str, folder: Path, device: str) -> Path:
    """A real-size model with random weights (bf16, built on ``device``) and its processor, saved."""
    import torch
    from transformers import AutoModelForImageTextToText

    config = real_config(name, folder)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def dry_run() -> list[dict[str, Any]]:
    """Each preset on the meta device (no memory, no weights): its size, and the tokens a 1024x768
    image with a short question becomes, to check the configuration before a GPU is spent on it."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    rows = []
    for name in PRESETS:
        folder = WORK / "models" / name
        config = real_config(name, folder)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
        processor = AutoProcessor.from_pretrained(folder)
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which organ?"}]}
        ]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=[[Image.new("RGB", (1024, 768))]], text=[text], return_tensors="pt")
        parameters = sum(p.numel() for p in model.parameters())
        rows.append(
            {"model": name, "parameters": parameters, "prompt_tokens": int(inputs["input_ids"].shape[1])}
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def write_questions(folder: Path, n: int, sizes: tuple[int, int], seed: int = 0) -> Path:
    """A synthetic VAL file of ``n`` questions whose images are noise PNGs of 16 sizes in ``sizes``."""
    rng = random.Random(seed)
    images = [encode_image(make_image(rng, rng.randrange(sizes[0], sizes[1] + 1))) for _ in range(16)]
    rows = make_rows(n, seed=seed, reference_every=0, distinct_images=1, image_size=4)
    for i, row in enumerate(rows):
        row["image"] = images[i % len(images)]
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(folder / schema.VAL_FILENAME, rows)
    return folder


@contextlib.contextmanager
def gpu_monitor() -> Iterator[dict[str, float]]:
    """Peak ``torch.cuda`` memory and mean ``nvidia-smi`` utilisation while the block runs."""
    import torch

    result: dict[str, float] = {}
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                samples.append(float(out.stdout.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return
            stop.wait(0.2)

    on_gpu = torch.cuda.is_available()
    thread = threading.Thread(target=sample, daemon=True)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
        thread.start()
    try:
        yield result
    finally:
        stop.set()
        if on_gpu:
            thread.join()
            result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            result["gpu_util_pct"] = round(sum(samples) / len(samples), 1) if samples else None


def served(
    model: str, data_dir: Path, questions: int, max_new_tokens: int, concurrency: int
) -> dict[str, Any]:
    """``--backend openai`` against ``transformers serve --continuous-batching`` on this machine."""
    from gmai_hf.testing import server

    extra = ["--continuous-batching", "--dtype", "bfloat16"] if device() == "cuda" else []
    with server.serve(
        model, WORK / "serve.log", ready_timeout_s=600, device=device(), extra_args=extra
    ) as up:
        return timed_run(
            model,
            data_dir,
            WORK / f"openai-c{concurrency}",
            backend="openai",
            limit=questions,
            max_new_tokens=max_new_tokens,
            backend_options={"base_url": up.base_url, "concurrency": concurrency},
        )


def measure(name: str, model: str, data_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    generate = {"limit": args.questions, "max_new_tokens": args.max_new_tokens}

    def loop() -> dict[str, Any]:
        speed = loop_questions_per_s(model, data_dir, args.loop_questions, args.max_new_tokens)
        return {"questions_per_s": speed, "batch_size": 1}

    def batched(batch_size: int | str, resort: bool = True, **settings: Any) -> dict[str, Any]:
        # without the re-sort, batches are grouped by prompt length only (as before issue 11)
        lookahead = Backend.lookahead_batches
        Backend.lookahead_batches = lookahead if resort else 1
        try:
            return timed_run(model, data_dir, WORK / "run", batch_size=batch_size, **settings)
        finally:
            Backend.lookahead_batches = lookahead

    methods = [
        ("loop", loop, args.loop_questions),
        # each change of the transformers path, one row each: batch 8 grouped by prompt length, then
        # re-sorted by the processor's token counts, then the batch size found automatically
        ("batched-8-by-prompt", lambda: batched(8, resort=False, **generate), args.questions),
        ("batched-8", lambda: batched(8, **generate), args.questions),
        ("batched", lambda: batched(args.batch_size, **generate), args.questions),
        (
            "likelihood",
            lambda: batched(args.batch_size, limit=args.questions, mode="likelihood"),
            args.questions,
        ),
    ]
    if not args.no_server:
        methods.append(
            (
                "openai",
                lambda: served(model, data_dir, args.questions, args.max_new_tokens, args.concurrency),
                args.questions,
            )
        )
    for method, call, questions in methods:
        entry: dict[str, Any] = {"model": name, "method": method, "questions": questions}
        with gpu_monitor() as gpu:
            try:
                measured = call()
                speed = measured["questions_per_s"]
                entry.update(
                    questions_per_s=round(speed, 2),
                    full_val_s=round(schema.VAL_QUESTIONS / speed, 1),
                    batch_size=measured["batch_size"],
                )
            except Exception as error:  # a method that cannot run here is a row saying why
                entry["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        entry.update(gpu)
        print(json.dumps(entry), flush=True)
        rows.append(entry)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny test models on the CPU (about a minute)")
    parser.add_argument("--models", nargs="+", help="presets (default: all; with --tiny: tiny architectures)")
    parser.add_argument("--questions", type=int, help="questions per batched/likelihood/openai method")
    parser.add_argument("--loop-questions", type=int, help="questions for the one-at-a-time loop")
    parser.add_argument(
        "--batch-size",
        type=batch_size_arg,
        help="default: auto on a GPU (start at 64, halve on OOM), 8 with --tiny",
    )
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--image-sizes",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="image sides in px (default 512 1024)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight to the server")
    parser.add_argument("--no-server", action="store_true", help="skip the transformers serve method")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument(
        "--dry-run", action="store_true", help="only build each preset on the meta device: size and tokens"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    datasets.disable_progress_bars()
    if args.dry_run:
        try:
            rows = dry_run()
        finally:
            shutil.rmtree(WORK, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        return 0
    tiny = args.tiny
    args.questions = args.questions or (12 if tiny else 256)
    args.loop_questions = args.loop_questions or (4 if tiny else 24)
    args.batch_size = args.batch_size or (8 if tiny else "auto")
    names = args.models or (["llava", "qwen2_5_vl"] if tiny else list(PRESETS))
    sizes = tuple(args.image_sizes or ((48, 96) if tiny else (512, 1024)))
    rows: list[dict[str, Any]] = []
    started = time.time()
    try:
        data_dir = write_questions(WORK / "data", max(args.questions, args.loop_questions), sizes)
        for name in names:
            folder = WORK / "models" / name
            try:
                model = str(TINY_MODELS[name](folder) if tiny else build_real(name, folder, device()))
            except Exception as error:  # the other model may still build: a row saying why, then on
                rows.append({"model": name, "method": "build", "questions": 0, "error": repr(error)[:300]})
                continue
            rows += measure(name, model, data_dir, args)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    card = _card()
    print(
        f"\n{card}; images {sizes[0]}-{sizes[1]} px; max_new_tokens {args.max_new_tokens}; "
        f"{time.time() - started:.0f} s"
    )
    head = ("model", "method", "q", "batch", "q/s", "VAL s", "GPU GB", "util %")
    print("{:<16} {:<20} {:>4} {:>5} {:>8} {:>8} {:>7} {:>7}".format(*head))
    for row in rows:
        if "error" in row:
            print(f"{row['model']:<16} {row['method']:<20} {row['questions']:>4} not run: {row['error']}")
            continue
        print(
            f"{row['model']:<16} {row['method']:<20} {row['questions']:>4} {row['batch_size'] or '-'!s:>5} "
            f"{row['questions_per_s']:>8.2f} "
            f"{row['full_val_s']:>8.1f} {row.get('peak_gpu_gb', '-'):>7} {row.get('gpu_util_pct', '-'):>7}"
        )
    if args.json:
        args.json.write_text(json.dumps({"device": card, "rows": rows}, indent=2) + "\n")
    # the server method may fail where transformers serve cannot batch images; anything else is an error
    return 0 if all("error" not in row for row in rows if row["method"] != "openai") else 1


def _card() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"CPU, {os.cpu_count()} cores (torch {torch.__version__})"


if __name__ == "__main__":
    sys.exit(main())
