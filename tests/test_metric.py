"""The evaluate metric: loads from its folder, equals gmai_hf.scoring, batches, processes, errors, card."""

from __future__ import annotations

import doctest
import threading
from pathlib import Path

import evaluate
import pytest
from test_matching import corpus

from gmai_hf import schema, scoring

ROOT = Path(__file__).resolve().parents[1]
METRIC = str(ROOT / "metrics" / "gmai_mmbench")


@pytest.fixture(scope="module")
def metric() -> evaluate.EvaluationModule:
    return evaluate.load(METRIC)


@pytest.fixture(scope="module")
def questions() -> dict[str, list]:
    predictions, rows = corpus(n_rows=20, seed=5)
    return {
        "predictions": predictions,
        "references": [row["answer"] for row in rows],
        "options": [[row[letter] for letter in schema.OPTION_LETTERS] for row in rows],
        **{dim: [row[dim] for row in rows] for dim in schema.BREAKDOWN_DIMENSIONS},
    }


def test_compute_equals_scoring(metric: evaluate.EvaluationModule, questions: dict[str, list]) -> None:
    expected = scoring.compute(**questions)
    assert metric.compute(**questions) == expected
    assert set(expected["by"]) == set(schema.BREAKDOWN_DIMENSIONS)
    assert set(expected["tree"]) == set(schema.TREE_VIEWS)
    strict = metric.compute(**questions, matching="strict")
    assert strict == scoring.compute(**questions, matching="strict") != expected


def test_add_batch_and_add_equal_compute(
    metric: evaluate.EvaluationModule, questions: dict[str, list]
) -> None:
    n = len(questions["predictions"])
    half = n // 2
    metric.add_batch(**{k: v[:half] for k, v in questions.items()})
    for i in range(half, n):
        metric.add(
            prediction=questions["predictions"][i],
            reference=questions["references"][i],
            **{k: v[i] for k, v in questions.items() if k not in ("predictions", "references")},
        )
    assert metric.compute() == scoring.compute(**questions)


def test_optional_inputs_may_be_left_out(metric: evaluate.EvaluationModule) -> None:
    predictions, references = ["A", "It is MRI", "(B)"], ["A", "B", "B"]
    assert metric.compute(predictions=predictions, references=references) == scoring.compute(
        predictions, references
    )
    metric.add_batch(predictions=predictions, references=references, department=[None, "Urology", None])
    metric.add(prediction="C", reference="C")
    result = metric.compute()
    assert result["by"]["department"]["(none)"]["total"] == 3
    assert result["tree"] == {}


def test_letter_mapping_options(metric: evaluate.EvaluationModule) -> None:
    result = metric.compute(
        predictions=["It is MRI", "It is MRI"],
        references=["B", "A"],
        options=[{"A": "CT", "B": "MRI"}, None],
    )
    assert (result["correct"], result["unmatched"]) == (1, 1)  # no options: only letters can match


def test_multi_process(tmp_path: Path) -> None:
    """Two processes (as threads) write their shards; process 0 gathers and scores all of them."""
    shards = [
        {"predictions": ["A", "B", "C"], "references": ["A", "B", "D"], "modality": ["CT"] * 3},
        {"predictions": ["D", "Z"], "references": ["D", "A"], "modality": ["MRI"] * 2},
    ]
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def process(rank: int) -> None:
        try:
            metric = evaluate.load(
                METRIC, num_process=2, process_id=rank, experiment_id="mp", cache_dir=str(tmp_path)
            )
            metric.add_batch(**shards[rank])
            results[rank] = metric.compute()
        except BaseException as error:  # re-raised in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=process, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert results[1] is None
    everything = {k: shards[0][k] + shards[1][k] for k in shards[0]}
    assert results[0] == scoring.compute(**everything)
    assert results[0]["by"]["modality"]["MRI"]["total"] == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(predictions=["A", "B"], references=["A"]), r"references has 1 items but predictions has 2"),
        (dict(predictions=["A"], references=["A"], modality=["CT", "MRI"]), r"modality has 2 items"),
        (dict(predictions=["A", "B"], references=["A", None]), r"references\[1\] is None"),
        (dict(predictions=["A"], references=["G"]), r"references\[0\] is 'G', not an option letter"),
        (dict(predictions=["A"], references=["A"], answer=["A"]), r"unknown inputs \['answer'\]"),
        (dict(predictions=["A"], references=["A"], matching="judge"), r"unknown matching 'judge'"),
    ],
)
def test_clear_errors(metric: evaluate.EvaluationModule, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metric.compute(**kwargs)


@pytest.mark.parametrize("document", ["metrics/gmai_mmbench/README.md", "docs/metric.md"])
def test_documented_examples_run(monkeypatch: pytest.MonkeyPatch, document: str) -> None:
    monkeypatch.chdir(ROOT)  # the examples load the metric by its path from the repository root
    result = doctest.testfile(str(ROOT / document), module_relative=False)
    assert result.attempted >= 8
    assert result.failed == 0


def test_card_has_evaluate_yaml_header() -> None:
    card = (ROOT / "metrics" / "gmai_mmbench" / "README.md").read_text(encoding="utf-8")
    header = card.split("---\n")[1]
    assert header.startswith("title: GMAI-MMBench\n")
    assert "- evaluate\n- metric\n" in header and "description: >-" in header
    for section in (
        "## Metric Description",
        "### Inputs",
        "### Output Values",
        "### Examples",
        "## Citation",
    ):
        assert section in card


def test_the_metric_loads_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gmai_hf

    monkeypatch.chdir(tmp_path)
    metric = evaluate.load(gmai_hf.METRIC_PATH)
    assert metric.compute(predictions=["A", "B"], references=["A", "A"])["accuracy"] == 0.5


def test_the_wheel_carries_the_metric(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("gmai_hf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "gmai_hf/metric/gmai_mmbench.py",
        "gmai_hf/metric/README.md",
        "gmai_hf/data/leaderboard.json",
    } <= names
    assert sum(name.startswith("gmai_hf/sample/") and name.endswith(".tsv") for name in names) == 12
