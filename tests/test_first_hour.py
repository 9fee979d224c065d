"""A newcomer's first hour: the set-up is pinned, and every early mistake ends in one clear line.

Each test reproduces a false step observed on a fresh machine (issue 18) through the real
command line, in a subprocess, as a user would meet it.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from gmai_hf.cli import HelpFormatter, build_parser
from gmai_hf.testing.data import write_benchmark
from gmai_hf.testing.models import build_tiny_llava

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"


def _gmai_hf(args: list[str], env: dict[str, str] | None = None, timeout: float = 300):
    import os

    return subprocess.run(
        [sys.executable, "-c", "import sys; from gmai_hf.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


# --- the pinned set-up ----------------------------------------------------------------------------


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", requirement)[0]).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version.split(",")[0]
    return pins


def test_every_package_the_set_up_installs_is_pinned_exactly() -> None:
    """gmai-hf[dev] and everything it pulls in, followed through the installed metadata."""
    from packaging.requirements import Requirement

    pins = _pins()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [("gmai-hf", frozenset({"dev"}))]
    while todo:
        name, extras = todo.pop()
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker and not any(marker.evaluate({"extra": extra}) for extra in extras or {""}):
                continue
            key = (_name(requirement.name), frozenset(requirement.extras))
            if key in seen:
                continue
            seen.add(key)
            todo.append(key)
            if key[0] == "gmai-hf":
                continue
            assert key[0] in pins, f"{key[0]} (from {name}) is installed but not pinned in {CONSTRAINTS}"
            assert metadata.version(key[0]) == pins[key[0]], (
                f"{key[0]} {metadata.version(key[0])} installed, {pins[key[0]]} pinned"
            )
    assert {"torch", "transformers", "datasets", "evaluate", "accelerate"} <= {name for name, _ in seen}


def test_the_readme_and_ci_install_through_the_pins() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    set_up = re.search(r"## Set up\n+```bash\n(.*?)```", readme, re.S)[1].strip()
    browser, pip = set_up.split(" && ")
    assert browser == "apt-get install -y chromium"
    assert pip == 'pip install -c .ci/constraints.txt -e ".[dev]"'
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "apt-get install -y -qq chromium" in ci and pip in ci and "python .ci/check_pins.py" in ci
    # every set-up the docs show is the README's
    for doc in (ROOT / "docs").glob("*.md"):
        for line in doc.read_text(encoding="utf-8").splitlines():
            if line.startswith("pip install") and "-e ." in line:
                assert line.strip() == pip, f"{doc.name}: {line}"


# --- the first run ----------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "unreachable"])
def test_no_data_and_no_hub_is_one_line_within_seconds(tmp_path: Path, offline: bool) -> None:
    out = tmp_path / "out"
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1" if offline else "0"}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"  # nothing listens: refused at once
    started = time.time()
    result = _gmai_hf(["run", "--model", "random", "--output-dir", str(out)], env)
    assert result.returncode == 2 and time.time() - started < 30
    assert "Traceback" not in result.stderr and "Retrying" not in result.stderr
    (line,) = _errors(result.stderr)
    assert all(way in line for way in ("--sample", "--data-dir", "--dataset"))
    assert not out.exists()  # a failed start leaves nothing behind


def test_a_model_folder_that_does_not_exist_is_named_as_such(tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "models" / "my-model"
    result = _gmai_hf(["run", "--model", str(missing), "--sample", "--output-dir", str(out)])
    assert result.returncode == 2
    (line,) = _errors(result.stderr)
    assert f"--model {missing}: no such folder" in line and "Hub" not in line
    assert not out.exists()
    # a relative name that could also be a Hub id: both are said
    result = _gmai_hf(
        ["run", "--model", "models/my-model", "--sample", "--output-dir", str(out)], {"HF_HUB_OFFLINE": "1"}
    )
    (line,) = _errors(result.stderr)
    assert "no such folder here" in line and "Hub" in line and not out.exists()


def test_a_start_that_fails_on_the_data_leaves_no_folder_or_lock(tmp_path: Path) -> None:
    data = write_benchmark(tmp_path / "data", n_val=5, test_parts=(), seed=1)
    tsv = data / "GMAI-MMBench_VAL.tsv"
    tsv.write_text(tsv.read_text(encoding="utf-8").replace("\t", ",", 3), encoding="utf-8")  # bad header
    out = tmp_path / "out"
    result = _gmai_hf(["run", "--model", "random", "--data-dir", str(data), "--output-dir", str(out)])
    assert result.returncode == 2 and len(_errors(result.stderr)) == 1
    assert not out.exists()
    # a folder that held a run before keeps it (only what a failed start made goes)
    done = tmp_path / "done"
    assert _gmai_hf(["run", "--model", "random", "--sample", "--output-dir", str(done)]).returncode == 0
    assert not (done / ".gmai-hf.lock").exists()  # a finished run leaves no lock file
    before = sorted(p.name for p in done.iterdir())
    again = _gmai_hf(["run", "--model", "random", "--data-dir", str(data), "--output-dir", str(done)])
    assert again.returncode == 2 and sorted(p.name for p in done.iterdir()) == before


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory: pytest.TempPathFactory):
    """A tiny LLaVA whose language model takes only ``positions`` positions."""

    def build(positions: int) -> Path:
        path = build_tiny_llava(tmp_path_factory.mktemp(f"llava{positions}") / "llava")
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        config["text_config"]["max_position_embeddings"] = positions
        (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
        return path

    return build


def test_the_generation_budget_fits_a_short_context(tmp_path: Path, short_context_model) -> None:
    model = short_context_model(320)
    out = tmp_path / "out"
    args = ["run", "--model", str(model), "--sample", "--limit", "6", "--output-dir", str(out)]
    result = _gmai_hf([*args, "--num-workers", "0"])
    assert result.returncode == 0, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if "the model takes at most 320 positions" in line]
    assert len(said) == 1  # said once, not per question
    run = json.loads((out / "results.json").read_text(encoding="utf-8"))["run"]
    assert run["failed"] == 0 and run["max_new_tokens"] == 2048
    assert run["engine"]["max_positions"] == 320
    assert 0 < run["engine"]["fitted_max_new_tokens"] < 320


def test_a_run_in_which_every_question_failed_exits_non_zero_saying_why_once(
    tmp_path: Path, short_context_model
) -> None:
    model = short_context_model(24)  # shorter than any prompt
    out = tmp_path / "out"
    args = ["run", "--model", str(model), "--sample", "--limit", "12", "--output-dir", str(out)]
    result = _gmai_hf([*args, "--num-workers", "0"])
    assert result.returncode == 1
    why = [line for line in result.stderr.splitlines() if "fills the model's 24 positions" in line]
    assert 1 <= len(why) <= 2  # the first failure, and the closing line; not 12 times
    assert "every one of the 12 questions failed" in _errors(result.stderr)[-1]
    assert not (out / "results.json").exists() and not (out / "report.md").exists()


# --- the command line ---------------------------------------------------------------------------------


def test_verbose_is_accepted_after_the_subcommand_too() -> None:
    parser = build_parser()
    assert parser.parse_args(["-v", "info"]).verbose
    assert parser.parse_args(["info", "-v"]).verbose
    assert parser.parse_args(["info", "--verbose"]).verbose
    assert not parser.parse_args(["info"]).verbose


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("--modle", "--model"),
        ("--smaple", "--sample"),
        ("--limt", "--limit"),
        ("--output_dir", "--output-dir"),
    ],
)
def test_a_misspelt_flag_names_the_closest_one(typed: str, meant: str) -> None:
    result = _gmai_hf(["run", typed, "x", "--output-dir", "o"], timeout=60)
    assert result.returncode == 2
    assert f"unrecognized arguments: {typed} (did you mean {meant}?)" in result.stderr.splitlines()[-1]


def test_every_flag_says_what_it_does_and_its_default() -> None:
    commands = build_parser().subcommands()
    assert commands
    problems = []
    for name, parser in commands.items():
        formatter = HelpFormatter(prog=name)
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            flag = f"{name} {action.option_strings[-1]}"
            text = formatter._expand_help(action) if action.help else ""
            if len(text.split()) < 3:
                problems.append(f"{flag}: no description")
            elif action.nargs != 0 and not action.required and "default" not in text.lower():
                problems.append(f"{flag}: no default in {text!r}")
            if re.search(r"\b(\w+) \1\b", text):
                problems.append(f"{flag}: a doubled word in {text!r}")
    assert not problems, "\n".join(problems)


def test_the_docs_tiny_model_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/runner.md: build a tiny LLaVA, then the command it gives; every question answered."""
    text = (ROOT / "docs" / "runner.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(from gmai_hf\.testing\.models import .*?)```", text, re.S)[1]
    command = re.search(r"then `(gmai-hf run --model tiny-llava [^`]*)`", text)[1]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/runner.md", "exec"), {})
    result = _gmai_hf([*command.split()[1:], "--num-workers", "0"])
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text(encoding="utf-8"))
    assert results["total"] == 20 and results["run"]["failed"] == 0


def test_library_warnings_print_once_and_http_requests_only_with_verbose() -> None:
    script = (
        "import logging, sys, datasets, huggingface_hub, transformers; "
        "from gmai_hf.cli import configure_logging; "
        "configure_logging(sys.argv[1] == '-v'); "
        "logging.getLogger('huggingface_hub.utils._http').warning('hub says'); "
        "logging.getLogger('datasets.builder').warning('datasets says'); "
        "logging.getLogger('httpx').info('HTTP Request: POST http://x/v1/chat/completions')"
    )
    for verbose in (False, True):
        flag = ["-v"] if verbose else ["-"]
        stderr = subprocess.run(
            [sys.executable, "-c", script, *flag], capture_output=True, text=True, timeout=120
        ).stderr
        assert stderr.count("hub says") == 1 and stderr.count("datasets says") == 1, stderr
        assert ("HTTP Request" in stderr) == verbose


def test_the_synthetic_label_is_on_every_plot_of_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gmai_hf import SAMPLE_DIR, plots, runner

    saved: dict[str, bool] = {}
    save = plots._save

    def spy(figure, path: Path, synthetic: bool = False) -> Path:
        saved[path.name] = synthetic
        return save(figure, path, synthetic)

    monkeypatch.setattr(plots, "_save", spy)
    config = runner.RunConfig(model="random", output_dir=tmp_path / "out", data_dir=str(SAMPLE_DIR))
    assert runner.run(config) == 0
    assert len(saved) >= 4 and all(saved.values()), saved
    from gmai_hf.testing.data import write_benchmark

    saved.clear()
    other = write_benchmark(tmp_path / "local", n_val=30, test_parts=(), seed=3)
    config = runner.RunConfig(model="random", output_dir=tmp_path / "local-out", data_dir=str(other))
    assert runner.run(config) == 0
    assert saved and not any(saved.values())  # other data: no such label
