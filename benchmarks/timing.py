"""What the runner benchmarks share: VLMEvalKit's one-question-at-a-time loop, and a timed run.

Imported by the benchmark scripts after they have set the ``HF_*`` environment (``datasets``
reads it once, on import).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from gmai_hf import protocols, runner
from gmai_hf.backends import load_backend


def device() -> str:
    """``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def loop_questions_per_s(
    model: str,
    data_dir: Path,
    questions: int,
    max_new_tokens: int,
    protocol: str = protocols.DEFAULT_PROTOCOL,
) -> float:
    """VLMEvalKit's way: one question at a time, image preparation and generation in turn.

    One question is answered first, untimed, so that kernels and the allocator are warm, as they
    are for a run that comes after it in the same process.
    """
    config = runner.RunConfig(
        model=model, output_dir=data_dir, data_dir=str(data_dir), limit=questions, protocol=protocol
    )
    config.validate()  # the family's prompt and image settings, as the timed run gets them
    rows = list(runner.load_questions(config).ds)
    backend = load_backend("transformers", model, device())
    # the runner's own preparation of a question (protocol, prompt, processor), in this process
    questions = runner.QuestionDataset(rows, config.prompt, config.protocol, backend.preparer(), True)
    backend.generate([questions[0]], max_new_tokens)
    start = time.perf_counter()
    for position in range(len(questions)):
        backend.generate([questions[position]], max_new_tokens)
    return len(rows) / (time.perf_counter() - start)


def timed_run(model: str, data_dir: Path, out: Path, **settings: Any) -> dict[str, Any]:
    """``gmai-hf run`` in this process: questions/s of answering (loading excluded) and the batch
    size the engine ended with; the output folder is removed after."""
    config = runner.RunConfig(model=model, output_dir=out, data_dir=str(data_dir), **settings)
    if runner.run(config) != 0:
        raise RuntimeError(f"the run in {out} failed")
    recorded = json.loads((out / "results.json").read_text())["run"]
    shutil.rmtree(out)
    return {
        "questions_per_s": float(recorded["questions_per_s"]),
        "batch_size": (recorded.get("engine") or {}).get("batch_size"),
    }
