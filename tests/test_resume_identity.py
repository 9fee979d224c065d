"""Answers on disk are reused only by a run that would give the same answers (issue 17, item 3).

The resume key comes from one declaration: every ``RunConfig`` field and backend option states
its role; what can change an answer (the endpoint, ``--max-image-side``, the model's files or
commit, ...) is in the key, what only chooses questions (``--limit``, the selection) is not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from gmai_hf import SAMPLE_DIR, client, processes, runner
from gmai_hf.runner import ANSWERS, BACKEND_OPTION_ROLES, QUESTIONS, RUN, RunConfig
from gmai_hf.testing.data import write_benchmark
from gmai_hf.testing.models import build_tiny_llava
from gmai_hf.testing.proxy import FaultProxy


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "BACKOFF_S", 0.01)


def _answers(out: Path) -> list[dict]:
    lines = []
    for path in sorted((out / "shards").glob("answers-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return lines


def test_every_setting_declares_its_role() -> None:
    roles = {f.name: f.metadata.get("role") for f in fields(RunConfig)}
    assert set(roles.values()) <= {ANSWERS, QUESTIONS, RUN} and None not in roles.values()
    assert roles["limit"] == roles["selection"] == QUESTIONS
    assert roles["model_identity"] == roles["data_files"] == roles["prompt"] == ANSWERS
    assert BACKEND_OPTION_ROLES["base_url"] == BACKEND_OPTION_ROLES["max_image_side"] == ANSWERS
    # every option the command line can give the openai backend is declared
    from gmai_hf.cli import build_parser
    from gmai_hf.run import config_from_args

    args = build_parser().parse_args(["run", "--model", "m", "--backend", "openai", "--output-dir", "o"])
    assert set(config_from_args(args).backend_options) <= set(BACKEND_OPTION_ROLES)
    with pytest.raises(ValueError, match=r"unknown backend option\(s\) \['temperature'\]"):
        RunConfig(model="random", output_dir=Path("o"), backend_options={"temperature": 1}).validate()


def test_a_wider_selection_or_limit_keeps_the_answers_and_asks_only_the_missing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = RunConfig(model="random", output_dir=out, data_dir=str(SAMPLE_DIR), limit=20)
    assert runner.run(first) == 0
    wider = RunConfig(model="random", output_dir=out, data_dir=str(SAMPLE_DIR), limit=50)
    assert runner.run(wider) == 0
    run = json.loads((out / "results.json").read_text())["run"]
    assert (run["resumed"], run["answered_now"], run["limit"]) == (20, 30, 50)
    narrower = RunConfig(
        model="random", output_dir=out, data_dir=str(SAMPLE_DIR), selection={"department": ["Dermatology"]}
    )
    assert runner.run(narrower) == 0
    assert sorted(a["index"] for a in _answers(out)) == sorted({a["index"] for a in _answers(out)})


def _served_run(out: Path, url: str, **options: object) -> RunConfig:
    return RunConfig(
        model="m",
        backend="openai",
        output_dir=out,
        data_dir=str(SAMPLE_DIR),
        limit=4,
        backend_options={"base_url": url, "max_retries": 0, **options},
    )


def test_another_endpoint_or_image_side_refuses_to_resume_naming_the_field(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with FaultProxy(None, reply=lambda text: "A") as one, FaultProxy(None, reply=lambda text: "B") as two:
        assert runner.run(_served_run(out, one.base_url, max_image_side=64)) == 0
        with pytest.raises(ValueError, match=r"base_url: was 'http://127\.0\.0\.1:\d+/v1', now 'http://127"):
            runner.run(_served_run(out, two.base_url, max_image_side=64))
        with pytest.raises(ValueError, match=r"max_image_side: was 64, now None"):
            runner.run(_served_run(out, one.base_url))
        assert not two.log  # refused before a question was sent
        # what does not change answers does not stop a resume
        assert runner.run(_served_run(out, one.base_url, max_image_side=64, concurrency=2)) == 0


def test_weights_replaced_at_the_same_path_refuse_to_resume(tmp_path: Path) -> None:
    model = build_tiny_llava(tmp_path / "model")
    out = tmp_path / "out"
    config = dict(model=str(model), output_dir=out, data_dir=str(SAMPLE_DIR), limit=2, max_new_tokens=4)
    assert runner.run(RunConfig(**config, num_workers=0)) == 0
    saved = json.loads((out / "shards" / "config.json").read_text())
    assert len(saved["model_identity"]["folder_sha256"]) == 64
    build_tiny_llava(tmp_path / "other", seed=1)  # same architecture, other weights
    shutil.copy(tmp_path / "other" / "model.safetensors", model / "model.safetensors")
    with pytest.raises(ValueError, match=r"model_identity: was \{'folder_sha256': '[0-9a-f]{12}"):
        runner.run(RunConfig(**config, num_workers=0))


def test_usage_counts_every_request_ever_sent(tmp_path: Path) -> None:
    out = tmp_path / "out"
    failing = {"on": True}
    with FaultProxy(None, lambda key, seen: "500" if failing["on"] else None, reply=lambda t: "A") as proxy:
        assert runner.run(_served_run(out, proxy.base_url)) == 1  # every question failed, once each
        failing["on"] = False
        assert runner.run(_served_run(out, proxy.base_url)) == 0
        sent = len(proxy.log)
    run = json.loads((out / "results.json").read_text())["run"]
    assert sent == 8 and run["usage"]["requests"] == 8  # the failed attempts of the first run too


def test_a_killed_runs_lock_is_free_at_once_though_it_had_workers(tmp_path: Path) -> None:
    data = write_benchmark(tmp_path / "data", n_val=60, test_parts=(), seed=4)
    out = tmp_path / "out"
    args = ["--model", "random", "--data-dir", str(data), "--output-dir", str(out)]
    args += ["--batch-size", "2", "--num-workers", "2"]
    # no pipes: waiting on them would wait for the workers too, which hold copies of them
    killed = subprocess.Popen(
        [sys.executable, "-m", "gmai_hf.run", *args],
        env={**os.environ, runner.KILL_AFTER_ENV: "10"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert killed.wait(timeout=120) == -9
    started = time.monotonic()
    lock = processes.OutputLock(out).acquire()  # raises if a worker still held the flock
    assert time.monotonic() - started < 1
    lock.release()
