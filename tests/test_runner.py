"""The runner: sharding, resume, failure handling, real multi-process runs, end to end on tiny models."""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gmai_hf import runner, schema
from gmai_hf.backends import Answer, Backend, Prepared
from gmai_hf.processes import PeerFailure, Peers
from gmai_hf.runner import RunConfig
from gmai_hf.testing.data import encode_image, make_image, make_rows, write_benchmark, write_tsv
from gmai_hf.testing.models import TINY_MODELS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: build(root / name) for name, build in TINY_MODELS.items()}


def _run(output_dir: Path, data_dir: Path, **kwargs: object) -> dict:
    config = RunConfig(output_dir=output_dir, data_dir=str(data_dir), **{"model": "random", **kwargs})
    assert runner.run(config) == 0
    return json.loads((output_dir / "results.json").read_text())


def _predictions(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]


def _answer_lines(output_dir: Path) -> list[dict]:
    lines = []
    for path in sorted((output_dir / "shards").glob("answers-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return lines


# --- planning --------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("questions", [1, 7, 23])
def test_shards_are_disjoint_and_complete(processes: int, questions: int) -> None:
    rng = random.Random(questions)
    lengths = {pos: rng.randrange(50, 500) for pos in range(questions)}
    batches = runner.plan_batches(lengths, batch_size=4)
    shares = [runner.shard(batches, rank, processes) for rank in range(processes)]
    flat = [pos for share in shares for batch in share for pos in batch]
    assert sorted(flat) == list(range(questions))
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1
    ordered = [lengths[pos] for batch in batches for pos in batch]
    assert ordered == sorted(ordered, reverse=True), "batches must group similar prompt lengths"


def test_truncated_answer_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "answers-0-of-2.jsonl"
    path.write_text('{"index": 1, "prediction": "A", "error": null}\n{"index": 2, "predic')
    (tmp_path / "answers-1-of-3.jsonl").write_text('{"index": 5, "prediction": "B", "error": null}\n')
    assert sorted(runner.read_answers(tmp_path)) == [1, 5]
    runner.repair_tail(path)
    assert path.read_text() == '{"index": 1, "prediction": "A", "error": null}\n'


def test_peer_failure_is_noticed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    me, other, third = (Peers(tmp_path, rank, 3) for rank in range(3))
    for peer in (me, other, third):
        peer.mark("heartbeat")
    third.mark("done")
    assert me.check() == [2]
    other.mark("failed", "Traceback...\nRuntimeError: boom")
    with pytest.raises(PeerFailure, match="process 1 of 3 failed: RuntimeError: boom"):
        me.check()
    other.path("failed").unlink()
    old = time.time() - 60
    me.since = old  # heartbeats have been expected for a minute
    os.utime(other.path("heartbeat"), (old, old))
    with pytest.raises(PeerFailure, match="process 1 of 3 stopped answering"):
        me.check()


class _OOM(Exception):
    pass


class _SmallMemory(Backend):
    """Fails like CUDA out-of-memory on batches of more than two questions."""

    def preparer(self):  # pragma: no cover - not used
        raise NotImplementedError

    def generate(self, items, max_new_tokens):
        if len(items) > 2 or any(item.index == 99 for item in items):
            raise _OOM()
        return [Answer(item.index, str(item.index)) for item in items]

    def score_letters(self, items):  # pragma: no cover - not used
        raise NotImplementedError

    def is_out_of_memory(self, error: BaseException) -> bool:
        return isinstance(error, _OOM)


def test_out_of_memory_halves_the_batch_and_keeps_it_halved() -> None:
    backend = _SmallMemory()
    backend.batch_limit = 8
    items = [Prepared(i, ("A", "B")) for i in range(7)]
    assert [a.text for a in backend.answer_batch(items, "generate", 4)] == [str(i) for i in range(7)]
    assert backend.batch_limit == 2
    answers = backend.answer_batch([Prepared(i, ("A", "B")) for i in (5, 99, 6)], "generate", 4)
    assert [a.text for a in answers] == ["5", None, "6"]
    assert "does not fit in memory" in answers[1].error and answers[1].retry


# --- in-process runs -----------------------------------------------------------------------------


def test_random_baseline_rerun_is_a_no_op(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "out"
    results = _run(out, data_dir, batch_size=6)
    assert (
        results["total"] == 40 and results["run"]["processes"] == 1 and results["run"]["answered_now"] == 40
    )
    assert 0 < results["accuracy"] < 1 and results["unmatched"] == 0
    assert (out / "report.md").read_text().startswith("#")
    shard = (out / "shards" / "answers-0-of-1.jsonl").read_text()
    (out / "report.md").unlink()
    again = _run(out, data_dir, batch_size=3)
    assert (out / "shards" / "answers-0-of-1.jsonl").read_text() == shard, "nothing is answered twice"
    assert again["run"]["answered_now"] == 0 and again["run"]["resumed"] == 40
    assert again["accuracy"] == results["accuracy"] and (out / "report.md").exists()
    # a no-op rerun keeps the timing of the run that answered (not 0.03 s beside 5,000 questions/s)
    for key in ("questions_per_s", "wall_time_s", "answer_time_s"):
        assert again["run"][key] == results["run"][key], key
    assert results["run"]["questions_per_s"] > 0
    with pytest.raises(ValueError, match="other settings"):
        runner.run(RunConfig(model="random", output_dir=out, data_dir=str(data_dir), seed=1))


def test_selection_and_test_split_submission(tmp_path: Path, data_dir: Path) -> None:
    results = _run(tmp_path, data_dir, split="test", batch_size=5)
    assert results["total"] == schema.TEST_PARTS * 6 and results["accuracy"] is None
    assert (tmp_path / "submission.xlsx").stat().st_size > 0
    indices = [r["index"] for r in _predictions(tmp_path)]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    task = _predictions(tmp_path)[0]["clinical_vqa_task"]
    sub = _run(tmp_path / "slice", data_dir, split="test", selection={"clinical_vqa_task": [task]}, limit=2)
    assert sub["total"] <= 2 and all(r["clinical_vqa_task"] == task for r in _predictions(tmp_path / "slice"))


def test_tiny_llava_generate_with_a_broken_image(tmp_path: Path, tiny: dict[str, Path]) -> None:
    rows = make_rows(10, seed=11, reference_every=0, distinct_images=3)
    png = base64.b64decode(encode_image(make_image(random.Random(0), 16)))
    # PNG signature, header and IEND intact (the builder accepts it), image data zeroed: decoding fails
    rows[4]["image"] = base64.b64encode(png[:41] + bytes(len(png) - 53) + png[-12:]).decode()
    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / schema.VAL_FILENAME, rows)
    results = _run(tmp_path / "out", data, model=str(tiny["llava"]), batch_size=4, max_new_tokens=4)
    records = {r["index"]: r for r in _predictions(tmp_path / "out")}
    assert len(records) == 10 and results["run"]["failed"] == 1
    assert "cannot be decoded" in records[4]["error"] and records[4]["hit"] is False
    assert all(r["error"] is None and r["prediction"] for i, r in records.items() if i != 4)
    assert results["run"]["engine"]["architecture"] == "LlavaForConditionalGeneration"


def test_tiny_gemma3_likelihood_matches_every_answer(
    tmp_path: Path, data_dir: Path, tiny: dict[str, Path]
) -> None:
    results = _run(tmp_path, data_dir, model=str(tiny["gemma3"]), mode="likelihood", limit=12, batch_size=5)
    records = _predictions(tmp_path)
    assert len(records) == 12 and results["unmatched"] == 0
    assert all(r["prediction"] == r["choice"] and r["error"] is None for r in records)
    assert results["run"]["engine"]["architecture"] == "Gemma3ForConditionalGeneration"


# --- real processes --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(
    args: list[str], processes: int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    if processes == 1:
        command = [sys.executable, "-m", "gmai_hf.run", *args]
    else:
        command = [
            *(
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--multi_gpu",
                "--num_processes",
                str(processes),
            ),
            *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
            *("--main_process_port", str(_free_port()), "-m", "gmai_hf.run", *args),
        ]
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=240
    )


def test_kill_then_resume_on_two_processes(tmp_path: Path) -> None:
    data = write_benchmark(tmp_path / "data", n_val=30, test_parts=(), seed=4)
    out = tmp_path / "out"
    args = ["--model", "random", "--data-dir", str(data), "--output-dir", str(out), "--batch-size", "4"]
    killed = _launch(args, 1, {runner.KILL_AFTER_ENV: "12"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(_answer_lines(out)) == 12 and not (out / "results.json").exists()
    with (out / "shards" / "answers-0-of-1.jsonl").open("a") as handle:
        handle.write('{"index": 29, "predic')  # killed mid-write
    resumed = _launch(args, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["run"]["processes"] == 2 and results["run"]["resumed"] == 12
    assert results["run"]["answered_now"] == 18 and results["total"] == 30
    for rank in range(2):  # both processes really answered
        assert (out / "shards" / f"answers-{rank}-of-2.jsonl").read_text().count("\n") > 0
    lines = _answer_lines(out)
    assert sorted(line["index"] for line in lines) == list(range(30)), "nothing lost, nothing twice"
    clean = _run(tmp_path / "clean", data)
    assert _predictions(out) == _predictions(tmp_path / "clean")
    assert results["accuracy"] == clean["accuracy"]


def test_dead_process_stops_the_run(tmp_path: Path, tiny: dict[str, Path]) -> None:
    data = write_benchmark(tmp_path / "data", n_val=24, test_parts=(), seed=6)
    out = tmp_path / "out"
    args = ["--model", str(tiny["llava"]), "--data-dir", str(data), "--output-dir", str(out)]
    args += ["--mode", "likelihood", "--batch-size", "2", "--num-workers", "1"]
    started = time.time()
    failed = _launch(args, 2, {runner.KILL_AFTER_ENV: "1@1"})
    assert failed.returncode != 0 and not (out / "results.json").exists()
    assert time.time() - started < 200
    answered = {line["index"] for line in _answer_lines(out)}
    assert 0 < len(answered) < 24
    finished = _launch(args, 1)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert sorted(line["index"] for line in _answer_lines(out)) == list(range(24))
    assert json.loads((out / "results.json").read_text())["unmatched"] == 0


class _Recording(Backend):
    """Answers instantly and records the batches it was given."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def preparer(self):  # pragma: no cover - not used
        raise NotImplementedError

    def generate(self, items, max_new_tokens):
        self.calls.append([item.cost for item in items])
        return [Answer(item.index, "A") for item in items]


def test_prepared_batches_are_resorted_by_token_count() -> None:
    """Planned by prompt length, but the image decides the size: batches regroup by tokens."""
    backend = _Recording()
    backend.batch_limit, backend.lookahead_batches = 2, 2
    costs = [[10, 900], [20, 800], [30, 700], [40, 600], [50]]  # each loader batch mixes sizes
    batches = [
        [Prepared(sum(map(len, costs[:b])) + i, ("A",), cost=c) for i, c in enumerate(batch)]
        for b, batch in enumerate(costs)
    ]
    failed = runner.Failed(99, "broken image")
    answers = list(backend.answers([*batches[:2], [*batches[2], failed], *batches[3:]], "generate", 4))
    assert backend.calls == [[900, 800], [20, 10], [700, 600], [40, 30], [50]]
    assert sorted(a.index for a in answers) == [*range(9), 99]
    assert next(a for a in answers if a.index == 99).error == "broken image"
