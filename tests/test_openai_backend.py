"""``--backend openai`` against a real server on loopback (``transformers serve`` with a tiny model),
with faults injected by a proxy: 429 + Retry-After, 500, dropped connections, answers past the timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gmai_hf import SAMPLE_DIR, client, runner
from gmai_hf.runner import RunConfig
from gmai_hf.testing.data import write_benchmark
from gmai_hf.testing.models import build_tiny_llava
from gmai_hf.testing.proxy import FaultProxy, in_order
from gmai_hf.testing.server import Server, serve


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("served") / "llava")


@pytest.fixture(scope="module")
def server(llava: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(llava, tmp_path_factory.mktemp("serve-log") / "serve.log") as running:
        yield running


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "BACKOFF_S", 0.05)
    monkeypatch.setenv("GMAI_HF_BACKOFF_S", "0.05")


def _config(
    out: Path, server_url: str, model: str, data_dir: Path | str = SAMPLE_DIR, **kwargs: object
) -> RunConfig:
    options = {"base_url": server_url, "concurrency": 4, "request_timeout": 20.0, "max_retries": 3}
    options.update(kwargs.pop("options", {}))  # type: ignore[arg-type]
    return RunConfig(
        model=model,
        backend="openai",
        output_dir=out,
        data_dir=str(data_dir),
        max_new_tokens=8,
        backend_options=options,
        **kwargs,  # type: ignore[arg-type]
    )


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _lines(out: Path) -> list[dict]:
    lines = []
    for path in sorted((out / "shards").glob("answers-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return lines


def test_every_sample_question_is_answered_and_accounted(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMAI_TEST_KEY", "sk-secret-never-shown")
    config = _config(
        tmp_path, server.base_url, server.model, limit=24, options={"api_key_env": "GMAI_TEST_KEY"}
    )
    assert runner.run(config) == 0
    results = _results(tmp_path)
    run = results["run"]
    assert results["total"] == 24 and run["failed"] == 0
    assert run["backend"] == "openai" and run["engine"]["base_url"] == server.base_url
    assert run["engine"]["served_models"] == [server.model]  # the names the server answered as
    assert run["usage"]["requests"] == 24 and run["usage"]["retries"] == 0
    assert run["usage"]["prompt_tokens"] > 24 * 20 and 24 < run["usage"]["completion_tokens"] <= 24 * 8
    # random weights rarely stop before max_tokens: the server's finish_reason "length" says which did not
    assert 0 < run["truncated"] == sum(bool(line.get("truncated")) for line in _lines(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(r["prediction"] and r["error"] is None for r in records)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md", ".csv"):
            assert "sk-secret-never-shown" not in path.read_text(errors="replace"), path


def test_the_server_gets_what_the_transformers_backend_gets(
    tmp_path: Path, server: Server, llava: Path
) -> None:
    """Same image bytes, same prompt, same chat template: the same greedy answers (fp32, CPU)."""
    for protocol in ("lossless", "vlmevalkit"):
        served, local = tmp_path / f"served-{protocol}", tmp_path / f"local-{protocol}"
        assert runner.run(_config(served, server.base_url, server.model, limit=10, protocol=protocol)) == 0
        in_process = RunConfig(
            model=str(llava),
            output_dir=local,
            data_dir=str(SAMPLE_DIR),
            limit=10,
            max_new_tokens=8,
            protocol=protocol,
            prompt="vlmevalkit-dataset",  # what the server was sent: nothing tells it the family
        )
        assert runner.run(in_process) == 0
        answers = {
            r["index"]: r["prediction"] for r in map(json.loads, (served / "predictions.jsonl").open())
        }
        expected = {
            r["index"]: r["prediction"] for r in map(json.loads, (local / "predictions.jsonl").open())
        }
        assert answers == expected, protocol


def test_faults_are_retried_and_nothing_is_asked_twice(tmp_path: Path, server: Server) -> None:
    # the timeout bounds the whole request, server queueing included: room for a loaded machine,
    # well short of the "slow" fault's hold
    with FaultProxy(server.port, in_order("429", "500", "drop", "slow", "500"), slow_s=10.0) as proxy:
        config = _config(
            tmp_path,
            proxy.base_url,
            server.model,
            limit=16,
            options={"request_timeout": 5.0, "max_retries": 5},
        )
        assert runner.run(config) == 0
    run = _results(tmp_path)["run"]
    assert run["failed"] == 0 and run["usage"]["retries"] == 5 and run["usage"]["requests"] == 21
    assert len({line["index"] for line in _lines(tmp_path)}) == 16 == len(_lines(tmp_path))
    # each question answered once by the server; the one held past the timeout may also have been
    # answered late, after the client had given up on it and asked again
    counts = proxy.asked()
    assert len(counts) == 16 and sorted(counts.values()) in ([1] * 16, [1] * 15 + [2])
    faults = [entry.fault for entry in proxy.log if entry.fault]
    assert faults == ["429", "500", "drop", "slow", "500"]


def test_a_question_that_keeps_failing_is_recorded_and_retried_by_the_rerun(
    tmp_path: Path, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    broken: set[str] = set()
    healed = {"now": False}

    def decide(key: str, seen: int) -> str | None:
        if not broken and seen == 0:
            broken.add(key)  # the first question asked fails every time, until the server heals
        return "500" if key in broken and not healed["now"] else None

    with FaultProxy(server.port, decide) as proxy:  # one endpoint for both runs: they may resume
        options = {"max_retries": 2}
        assert runner.run(_config(tmp_path, proxy.base_url, server.model, limit=8, options=options)) == 1
        failed = [line for line in _lines(tmp_path) if line["error"]]
        assert len(failed) == 1 and failed[0]["retry"] and failed[0]["prediction"] == ""
        assert "HTTP 500" in failed[0]["error"] and "test proxy failed this request" in failed[0]["error"]
        assert "after 3 tries" in failed[0]["error"]
        (summary,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert summary.startswith("1 question(s) failed (e.g. ") and "rerun the same command" in summary
        results = _results(tmp_path)
        assert results["run"]["failed"] == 1 and results["total"] == 8
        record = next(r for r in map(json.loads, (tmp_path / "predictions.jsonl").open()) if r["error"])
        assert record["hit"] is False and record["choice"] is None
        healed["now"], asked_before = True, len(proxy.log)
        assert runner.run(_config(tmp_path, proxy.base_url, server.model, limit=8)) == 0
        rerun = [entry.key for entry in proxy.log[asked_before:]]
    assert rerun == sorted(broken), "the rerun asks only the failed question"
    assert _results(tmp_path)["run"]["failed"] == 0


def test_a_killed_run_reasks_only_what_was_in_flight(tmp_path: Path, server: Server) -> None:
    data = write_benchmark(tmp_path / "data", n_val=30, test_parts=(), seed=3)
    out = tmp_path / "out"
    with FaultProxy(server.port) as proxy:
        args = [
            "--backend",
            "openai",
            "--model",
            server.model,
            "--base-url",
            proxy.base_url,
            "--data-dir",
            str(data),
        ]
        args += ["--output-dir", str(out), "--max-new-tokens", "8", "--concurrency", "4"]
        command = [sys.executable, "-m", "gmai_hf.run", *args]
        killed = subprocess.run(
            command,
            env={**os.environ, runner.KILL_AFTER_ENV: "11"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert killed.returncode == -9
        saved = {line["index"] for line in _lines(out)}
        answered_before = {entry.key for entry in proxy.log if entry.status == 200}
        assert len(saved) == 11 and len(answered_before) >= 11
        first = len(proxy.log)
        finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr[-3000:]
    asked_again = [entry.key for entry in proxy.log[first:]]
    assert len(asked_again) == 30 - 11, "only the unanswered questions are asked"
    assert len(answered_before & set(asked_again)) <= 4, "at most those in flight at the kill"
    assert sorted(line["index"] for line in _lines(out)) == list(range(30))


def test_an_unreachable_server_is_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import argparse

    from gmai_hf import run
    from gmai_hf.testing.server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    args = parser.parse_args(
        ["--backend", "openai", "--model", "m", "--base-url", url, "--sample", "--output-dir", str(tmp_path)]
    )
    assert run.main(args) == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert (
        record.getMessage().startswith(f"cannot reach the model server at {url}")
        and "--base-url" in record.getMessage()
    )


def test_no_key_for_the_official_api_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="no API key: set the environment variable OPENAI_API_KEY"):
        client.ChatClient("gpt-4o")


def test_likelihood_mode_needs_a_local_model(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9/v1", "m", mode="likelihood")
    with pytest.raises(ValueError, match="--mode likelihood needs the model's next-token probabilities"):
        runner.run(config)


def test_large_images_can_be_downscaled_for_apis(tmp_path: Path) -> None:
    import base64
    import io

    from PIL import Image

    from gmai_hf.backends import Question
    from gmai_hf.backends.openai import OpenAIPreparer

    buffer = io.BytesIO()
    Image.new("RGB", (900, 300), (10, 200, 30)).save(buffer, format="PNG")
    question = Question(0, "Question: q?\n", {"A": "x"}, buffer.getvalue())
    as_is = OpenAIPreparer()(question).features["messages"][0]["content"]
    assert (
        as_is[0]["image_url"]["url"]
        == "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    )
    assert as_is[1] == {"type": "text", "text": "Question: q?\n"}
    small = OpenAIPreparer(max_image_side=300)(question).features["messages"][0]["content"][0]["image_url"][
        "url"
    ]
    assert small.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(small.split(",", 1)[1]))) as image:
        assert image.size == (300, 100)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("2", 2.0), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("", None)],
)
def test_retry_after_in_any_form_never_ends_the_run(header: str, expected: float | None) -> None:
    from types import SimpleNamespace

    from gmai_hf.client import ChatClient

    error = SimpleNamespace(response=SimpleNamespace(headers={"retry-after": header}))
    assert ChatClient._retry_after(error) == expected  # a date in the past: no wait; garbage: the backoff


@pytest.mark.parametrize("wrapper", ["GPT4V", "Claude3V"])
def test_a_real_server_takes_the_api_wrappers_requests(tmp_path: Path, server: Server, wrapper: str) -> None:
    """A second JPEG, and GPT4V's ``detail: low`` in the image part, are what a server accepts."""
    config = _config(tmp_path, server.base_url, server.model, limit=4, prompt=f"vlmevalkit:{wrapper}")
    assert runner.run(config) == 0
    run = _results(tmp_path)["run"]
    assert run["prompt"] == f"vlmevalkit:{wrapper}@e8e78f0" and run["failed"] == 0
    assert run["usage"]["requests"] == 4
