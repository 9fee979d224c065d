"""Speed features whose effect is measured on a GPU, tested here for what a CPU can check: the GPU
benchmark's code path (``--tiny``), ``--device-map auto`` / ``--gpus-per-process`` plumbing and
``--batch-size auto``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gmai_hf import run as run_cli
from gmai_hf import runner
from gmai_hf.backends import load_backend
from gmai_hf.backends.hf import process_gpus
from gmai_hf.runner import RunConfig
from gmai_hf.testing.models import build_tiny_llava

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "model")


def test_gpu_benchmark_runs_every_method_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"].startswith("CPU")
    methods = {(row["model"], row["method"]): row for row in report["rows"]}
    assert set(methods) == {
        (model, method)
        for model in ("llava", "qwen2_5_vl")
        for method in ("loop", "batched-8-by-prompt", "batched-8", "batched", "likelihood", "openai")
    }
    for row in report["rows"]:
        assert "error" not in row, row
        assert row["questions_per_s"] > 0
        # the projection is the full VAL split at the measured speed
        assert row["full_val_s"] == pytest.approx(4550 / row["questions_per_s"], rel=0.01)
    assert methods["llava", "loop"]["batch_size"] == 1
    assert methods["llava", "batched-8-by-prompt"]["batch_size"] == 8
    assert methods["llava", "batched"]["batch_size"] == 8  # --batch-size 8 on the CPU with --tiny
    assert "batched" in done.stdout and "VAL s" in done.stdout  # the printed table


def test_gpu_presets_are_the_real_sizes(tmp_path: Path) -> None:
    """What the GPU run would build, on the meta device: MedGemma-4B is 4.3B parameters, Qwen2.5-VL-7B
    8.3B; a 1024x768 image is 256 image tokens for Gemma 3 and about 1,000 for Qwen2.5-VL."""
    out = tmp_path / "dry.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--dry-run", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["medgemma-4b"]["parameters"] == pytest.approx(4.30e9, rel=0.02)
    assert rows["qwen2.5-vl-7b"]["parameters"] == pytest.approx(8.29e9, rel=0.02)
    assert 256 < rows["medgemma-4b"]["prompt_tokens"] < 300
    assert 900 < rows["qwen2.5-vl-7b"]["prompt_tokens"] < 1100


@pytest.mark.parametrize(
    ("rank", "processes", "gpus", "per", "expected"),
    [
        (0, 1, 8, None, [0, 1, 2, 3, 4, 5, 6, 7]),  # one process: every GPU
        (1, 2, 8, None, [4, 5, 6, 7]),  # shared out evenly
        (3, 4, 8, 2, [6, 7]),  # 8 GPUs, 2 per copy: 4 copies
        (0, 1, 8, 2, [0, 1]),
        (2, 3, 7, 2, [4, 5]),  # a GPU left over is left idle
        (0, 1, 0, None, []),  # no GPU: the CPU
    ],
)
def test_each_process_takes_its_own_gpus(
    rank: int, processes: int, gpus: int, per: int | None, expected: list[int]
) -> None:
    assert process_gpus(rank, processes, gpus, per) == expected


@pytest.mark.parametrize(
    ("processes", "gpus", "per", "message"),
    [
        (4, 8, 3, r"4 process\(es\) on this node with 3 GPU\(s\) each need 12 GPUs; 8 are visible"),
        (4, 2, None, r"--num_processes 2"),
        (1, 0, 2, "no GPU is visible"),
    ],
)
def test_too_few_gpus_is_an_error_that_says_what_to_launch(
    processes: int, gpus: int, per: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        process_gpus(0, processes, gpus, per)


def test_gpus_per_process_reaches_from_pretrained(llava: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Process 1 of 2 on a node of 4 GPUs, 2 per process: the model is spread over GPUs 2 and 3."""
    import torch
    from transformers import AutoModelForImageTextToText

    captured: dict[str, Any] = {}

    class Captured(Exception):
        pass

    def from_pretrained(model_id: str, **kwargs: Any) -> None:
        captured.update(kwargs)
        raise Captured

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda gpu: (70 * 2**30 + gpu, 80 * 2**30))
    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", from_pretrained)
    with pytest.raises(Captured):
        load_backend("transformers", str(llava), "cuda:1", gpus_per_process=2)
    assert captured["device_map"] == "auto"
    assert captured["max_memory"] == {2: 70 * 2**30 + 2, 3: 70 * 2**30 + 3}
    assert captured["dtype"] == torch.bfloat16  # bf16 because the copy is on GPUs


def test_device_map_auto_answers_as_one_device(llava: Path, data_dir: Path, tmp_path: Path) -> None:
    results = {}
    for name, device_map in (("one", None), ("auto", "auto")):
        config = RunConfig(
            model=str(llava),
            output_dir=tmp_path / name,
            data_dir=str(data_dir),
            limit=6,
            max_new_tokens=4,
            device_map=device_map,
        )
        assert runner.run(config) == 0
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
        lines = (tmp_path / name / "predictions.jsonl").read_text().splitlines()
        results[name]["predictions"] = [json.loads(line)["prediction"] for line in lines]
    assert results["auto"]["predictions"] == results["one"]["predictions"]
    assert results["auto"]["run"]["engine"]["device"] == "cpu"


def test_device_map_belongs_to_the_transformers_backend(data_dir: Path, tmp_path: Path) -> None:
    config = RunConfig(
        model="random", backend="random", output_dir=tmp_path, data_dir=str(data_dir), gpus_per_process=2
    )
    with pytest.raises(ValueError, match="place a transformers model; the random backend has none"):
        runner.run(config)


def test_batch_size_auto(data_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    base = ["--model", "random", "--output-dir", str(tmp_path / "out"), "--data-dir", str(data_dir)]
    args = parser.parse_args([*base, "--batch-size", "auto"])
    assert args.batch_size == "auto"
    assert runner.initial_batch_size("auto", "cuda:0") == runner.AUTO_BATCH_START
    assert runner.initial_batch_size("auto", "cpu") == 8  # the CPU never says it is out of memory
    assert runner.initial_batch_size(3, "cuda:0") == 3
    assert run_cli.main(args) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["run"]["batch_size"] == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--batch-size", "many"])
    with pytest.raises(ValueError, match="--batch-size must be a number of at least 1 or 'auto'"):
        RunConfig(model="random", output_dir=tmp_path, batch_size=0).validate()
