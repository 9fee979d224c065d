"""Nothing silently wrong: concurrent launches, other data, unofficial files, resume races, dead
launchers, interrupts, unreachable models, planted symlinks (issue 8), with real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gmai_hf import SAMPLE_DIR, cli, download, processes, runner, schema, tsv
from gmai_hf.runner import RunConfig
from gmai_hf.testing.data import iter_rows, write_benchmark, write_tsv
from gmai_hf.testing.models import build_tiny_llava

ROOT = Path(__file__).resolve().parents[1]


def _run(output_dir: Path, data_dir: Path | str, **kwargs: object) -> dict:
    config = RunConfig(output_dir=output_dir, data_dir=str(data_dir), **{"model": "random", **kwargs})
    assert runner.run(config) == 0
    return json.loads((output_dir / "results.json").read_text())


def _answer_lines(output_dir: Path) -> list[dict]:
    lines = []
    for path in sorted((output_dir / "shards").glob("answers-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return lines


def _command(args: list[str], processes: int = 1, port: int | None = None) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "gmai_hf.run", *args]
    return [
        *(
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
        ),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
        *("--main_process_port", str(port or _free_port()), "-m", "gmai_hf.run", *args),
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_answers(output_dir: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while len(_answer_lines(output_dir)) < count:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "the run never got going"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA: slow enough at batch size 1 with long generations to interrupt mid-run."""
    return build_tiny_llava(tmp_path_factory.mktemp("slow") / "llava")


@pytest.fixture(scope="module")
def many_questions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_benchmark(tmp_path_factory.mktemp("many"), n_val=120, test_parts=(), seed=9)


# --- 1. one launch per output folder -------------------------------------------------------


def test_a_second_launch_into_a_busy_output_folder_fails_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from gmai_hf.processes import OutputLock; "
            f"lock = OutputLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.time()
        refused = subprocess.run(
            _command(["--model", "random", "--sample", "--output-dir", str(out)]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode == 2 and time.time() - started < 60
        errors = [line for line in refused.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and "Traceback" not in refused.stderr
        assert (
            str(out) in errors[0]
            and f"pid {holder.pid}" in errors[0]
            and "in use by another run" in errors[0]
        )
        assert not (out / "results.json").exists()
    finally:
        holder.kill()  # a killed holder leaves its lock file behind: it must not block the next run
        holder.wait()
    assert (out / processes.LOCK_FILE).exists()
    assert _run(out, SAMPLE_DIR)["total"] == 200


# --- 2. the resume key identifies the data ------------------------------------------------------


def test_resume_refuses_other_data_and_accepts_the_same_files_elsewhere(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, SAMPLE_DIR, limit=20)
    other = write_benchmark(tmp_path / "other", n_val=40, test_parts=(), seed=5)
    with pytest.raises(ValueError, match=r"other settings or data.*data_files"):
        runner.run(RunConfig(model="random", output_dir=out, data_dir=str(other), limit=20))
    copy = tmp_path / "copy"
    shutil.copytree(SAMPLE_DIR, copy)  # the same files in another folder: the same data
    again = _run(out, copy, limit=20)
    assert again["run"]["answered_now"] == 0 and again["run"]["resumed"] == 20


# --- 3. which data was scored, and whether it is official ------------------------------------


def test_the_bundled_sample_is_labelled_synthetic(tmp_path: Path) -> None:
    results = _run(tmp_path, SAMPLE_DIR)
    data = results["data"]
    assert (data["source"], data["official"], data["questions"]) == ("sample", False, 200)
    assert data["files"] == [
        {
            "name": schema.VAL_FILENAME,
            "bytes": (SAMPLE_DIR / schema.VAL_FILENAME).stat().st_size,
            "md5_verified": False,
        }
    ]
    report = (tmp_path / "report.md").read_text()
    assert report.split("## Overall")[0].count("Synthetic sample") == 1 and " of 31 (" not in report


def test_a_file_cut_at_a_row_boundary_is_not_official(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    source = SAMPLE_DIR / schema.VAL_FILENAME
    header, start = tsv.read_header(source)
    rows = list(tsv.iter_records(source, len(header), start))
    (data / schema.VAL_FILENAME).write_bytes(source.read_bytes()[: rows[149].end])  # 150 whole rows
    results = _run(tmp_path / "out", data)
    assert results["total"] == 150 and results["data"]["source"] == "local"
    assert results["data"]["official"] is False and results["data"]["questions"] == 150
    assert any(
        "150 questions, the official validation split has 4550" in p for p in results["data"]["problems"]
    )
    head = (tmp_path / "out" / "report.md").read_text().split("## Overall")[0]
    assert "**Not comparable with the leaderboard**" in head and "not verified as the official file" in head


def test_files_with_the_official_md5_make_an_official_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write_tsv(
        data / schema.VAL_FILENAME,
        iter_rows(schema.VAL_QUESTIONS, seed=2, image_size=2, distinct_images=1, reference_every=0),
    )
    assert cli.main(["prepare", "--data-dir", str(data), "--split", "validation", "--verify"]) == 1
    assert "NOT the official file (md5 differs)" in capsys.readouterr().out
    unverified = _run(tmp_path / "unverified", data)["data"]
    assert unverified["official"] is False and unverified["files"][0]["md5_verified"] is False
    # pretend this file is the release: its md5 is the official one
    monkeypatch.setattr(schema, "VAL_MD5", download.md5sum(path))
    assert cli.main(["prepare", "--data-dir", str(data), "--split", "validation", "--verify"]) == 0
    assert f"validation: {path}: official (md5 matches)" in capsys.readouterr().out
    results = _run(tmp_path / "out", data)
    assert results["data"]["official"] is True and results["data"]["problems"] == []
    assert results["data"]["files"][0]["md5_verified"] is True
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Not comparable" not in report and " of 31 (" in report
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # an edited file is not trusted on
    assert download.recall(path) is None  # an old verdict: it is checked again


# --- 5. every process plans from one snapshot --------------------------------------------------


def test_a_torn_shard_tail_cannot_split_the_plan(tmp_path: Path) -> None:
    data = write_benchmark(tmp_path / "data", n_val=60, test_parts=(), seed=4)
    out = tmp_path / "out"
    args = ["--model", "random", "--data-dir", str(data), "--output-dir", str(out), "--batch-size", "4"]
    killed = subprocess.run(
        _command(args),
        env={**os.environ, runner.KILL_AFTER_ENV: "20"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9
    shard = out / "shards" / "answers-0-of-1.jsonl"
    lines = shard.read_text().splitlines()
    shard.write_text("\n".join(lines))  # the last complete JSON line has lost its newline
    resumed = subprocess.run(_command(args, processes=2), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    indices = [line["index"] for line in _answer_lines(out)]
    assert sorted(indices) == list(range(60)), "every question answered exactly once"
    assert json.loads((out / "results.json").read_text())["total"] == 60


# --- 6. a dead launcher, a missing peer ---------------------------------------------------------


def test_workers_exit_when_their_launcher_is_killed(
    tmp_path: Path, slow_model: Path, many_questions: Path
) -> None:
    out = tmp_path / "out"
    args = ["--model", str(slow_model), "--data-dir", str(many_questions), "--output-dir", str(out)]
    args += ["--batch-size", "1", "--max-new-tokens", "96", "--num-workers", "0"]
    launcher = subprocess.Popen(
        _command(args, processes=2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _wait_for_answers(out, 4, launcher)
    workers = [
        p
        for p in psutil.Process(launcher.pid).children(recursive=True)
        if "gmai_hf.run" in " ".join(p.cmdline())
    ]
    assert len(workers) == 2
    launcher.kill()
    launcher.wait()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, "orphaned workers must exit within seconds"
    assert {proc.returncode for proc in gone} <= {processes.ORPHAN_EXIT, -signal.SIGKILL, None}
    before = {line["index"] for line in _answer_lines(out)}
    rerun = subprocess.run(_command(args), capture_output=True, text=True, timeout=600)  # at once
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    indices = [line["index"] for line in _answer_lines(out)]
    assert sorted(indices) == list(range(120)) and before <= set(indices)


def _late_peer(rank: int, port: int, timeout: str, queue: object) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    os.environ[processes.STARTUP_TIMEOUT_ENV] = timeout
    state = runner.make_state()
    if rank == 1:
        time.sleep(60)  # reached start-up, but never the token broadcast
        return
    started = time.time()
    try:
        processes.share_token(state, processes.new_token())
    except processes.StartupTimeout as error:
        queue.put((str(error), time.time() - started))


def test_a_start_up_collective_times_out_with_what_to_do() -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    peers = [context.Process(target=_late_peer, args=(rank, port, "5", queue)) for rank in range(2)]
    for peer in peers:
        peer.start()
    message, waited = queue.get(timeout=90)
    for peer in peers:
        peer.kill()
        peer.join()
    assert waited < 30 and "did not all start within 5 s" in message and "GMAI_HF_STARTUP_TIMEOUT" in message


# --- 9. Ctrl-C ------------------------------------------------------------------------------------


def test_ctrl_c_says_what_was_saved_in_one_line(
    tmp_path: Path, slow_model: Path, many_questions: Path
) -> None:
    out = tmp_path / "out"
    args = ["--model", str(slow_model), "--data-dir", str(many_questions), "--output-dir", str(out)]
    args += ["--batch-size", "1", "--max-new-tokens", "96", "--num-workers", "1"]
    run = subprocess.Popen(
        _command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    _wait_for_answers(out, 3, run)
    os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole process group
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    saved = len({line["index"] for line in _answer_lines(out)})
    (line,) = [line for line in stderr.splitlines() if "interrupted" in line]
    assert f"interrupted: {saved} answers saved in {out}; rerun the same command to resume" in line


# --- 10. models that cannot be had --------------------------------------------------------------


def test_an_unreachable_hub_model_fails_fast_naming_it(tmp_path: Path) -> None:
    started = time.time()
    result = subprocess.run(
        _command(["--model", "no-such-org/no-such-model", "--sample", "--output-dir", str(tmp_path)]),
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 2 and time.time() - started < 60
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "no-such-org/no-such-model" in errors[0] and "--model /path/to/a/folder" in errors[0]


def test_a_hub_that_cannot_be_reached_is_said_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    from gmai_hf.backends import hf

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    with pytest.raises(
        OSError,
        match=r"medgemma-4b-it: no such folder here, and the Hugging Face Hub cannot be reached .*Name or",
    ):
        hf.locate_model("google/medgemma-4b-it")


@pytest.mark.parametrize("name", ["random", "Random", "RANDOM"])
def test_random_in_any_case_is_the_baseline(tmp_path: Path, name: str) -> None:
    results = _run(tmp_path, SAMPLE_DIR, model=name, limit=5, backend="transformers")
    assert results["run"]["engine"]["engine"] == "random"
    # recorded as the command line records it, so `gmai-hf run --model random` resumes this folder
    assert results["run"]["backend"] == "random"


def test_a_missing_package_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, slow_model: Path
) -> None:
    import argparse

    import transformers

    from gmai_hf import run

    def needs_torchvision(*args: object, **kwargs: object) -> None:
        raise ImportError(
            "\nQwen2VLVideoProcessor requires the Torchvision library but it was not found in your "
            "environment.\nCheck out the instructions on the installation page: https://pytorch.org/get-started/locally/"
        )

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", needs_torchvision)
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    args = parser.parse_args(
        ["--model", str(slow_model), "--sample", "--output-dir", str(tmp_path), "--limit", "2"]
    )
    assert run.main(args) == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == (
        f"cannot load {slow_model}: Qwen2VLVideoProcessor requires the Torchvision library but it was not "
        "found in your environment."
    )


# --- 8. a full disk -----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["preparing the dataset", "writing answers"])
def test_a_full_disk_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    import argparse
    import errno

    from gmai_hf import builder, run

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out"))

    target = (builder, "load_split") if stage == "preparing the dataset" else (runner.Runner, "_answer_all")
    monkeypatch.setattr(*target, full)
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    args = parser.parse_args(["--model", "random", "--sample", "--output-dir", str(tmp_path / "out")])
    assert run.main(args) == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == f"[Errno 28] No space left on device: '{tmp_path / 'out'}'"


@pytest.mark.parametrize("stage", ["answers", "outputs"])
def test_a_full_disk_names_the_file_it_was_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    """A write that fills the disk raises ENOSPC with no file name: the message must add it."""
    import argparse
    import errno

    from gmai_hf import files, run
    from gmai_hf.backends.base import Answer

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() and fsync() raise it

    if stage == "answers":  # the answer is serialised and written inside the append of its shard
        monkeypatch.setattr(Answer, "to_json", full)
        expected = "answers-0-of-1.jsonl"
    else:
        monkeypatch.setattr(files.os, "fsync", full)
        expected = "plan.json"  # the first file written atomically
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(["--model", "random", "--sample", "--output-dir", str(out), "--limit", "3"])
    assert run.main(args) == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    message = record.getMessage()
    assert message.startswith("[Errno 28] No space left on device writing ") and "\n" not in message
    assert expected in message and str(out) in message and "free space" in message


def test_an_atomic_write_on_a_full_disk_names_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from gmai_hf import files

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match=f"writing {tmp_path / 'results.json'}") as raised:
        files.write_atomic(tmp_path / "results.json", "{}")
    assert raised.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())  # nothing half-written


# --- 12. atomic writes ----------------------------------------------------------------------------


def test_outputs_never_follow_a_planted_symlink(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in ("results.json.tmp", "predictions.jsonl.tmp", "report.md.tmp", ".results.json.tmp"):
        (out / name).symlink_to(victim)
    (out / "report.md").symlink_to(victim)  # even the target itself: replaced, not written through
    _run(out, SAMPLE_DIR, limit=10)
    assert victim.read_text() == "precious"
    assert not (out / "report.md").is_symlink() and (out / "report.md").read_text().startswith(
        "# GMAI-MMBench"
    )
