"""Reports: report.md, our CSVs, VLMEvalKit-layout CSVs, PNG plots and unmatched.jsonl.

Run folders are made here exactly as the contract describes them (records + ``scoring.compute``
output), so every number in a report can be checked against the metric's own.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gmai_hf import reports, schema
from gmai_hf.commands import report as report_command
from gmai_hf.matching import match
from gmai_hf.scoring import compute
from gmai_hf.testing.data import make_rows
from gmai_hf.tree import NONE_LABEL

_ANSWER_STYLES = ("{letter}", "({letter})", "The answer is {letter}.", "{text}", "I cannot tell.", "")

#: What ``identity.describe`` records for the official, md5-verified validation file.
OFFICIAL_DATA = {
    "source": "local",
    "official": True,
    "split": "validation",
    "questions": schema.VAL_QUESTIONS,
    "files": [{"name": schema.VAL_FILENAME, "bytes": 9_340_000_000, "md5_verified": True}],
    "problems": [],
}


def make_run_dir(
    path: Path,
    model: str,
    *,
    n: int = 80,
    seed: int = 0,
    with_answer: bool = True,
    data: dict[str, Any] | None = OFFICIAL_DATA,
    **info: Any,
) -> tuple[Path, dict[str, Any]]:
    """A run folder as ``results.write_outputs`` writes it; returns it and the metric's output."""
    rng = random.Random(seed)
    rows = make_rows(n, seed=7, with_answer=with_answer, image_size=4, distinct_images=1, reference_every=0)
    rows[0]["department"] = None  # some Attribute Recognition questions have no department
    predictions, options, records = [], [], []
    for row in rows:
        present = {letter: row[letter] for letter in schema.OPTION_LETTERS if row[letter] is not None}
        letter = row["answer"] if with_answer and rng.random() < 0.4 else rng.choice(sorted(present))
        style = rng.choice(_ANSWER_STYLES)
        prediction = style.format(letter=letter, text=present[letter])
        choice = match(prediction, present)
        predictions.append(prediction)
        options.append(present)
        records.append(
            {
                "index": row["index"],
                "prediction": prediction,
                "choice": choice,
                "answer": row.get("answer"),
                "hit": choice == row["answer"] if with_answer else None,
                **{column: row[column] for column in schema.TREE_COLUMNS},
            }
        )
    results = compute(
        predictions,
        [row["answer"] for row in rows] if with_answer else None,
        options=options,
        **{dim: [row[dim] for row in rows] for dim in schema.BREAKDOWN_DIMENSIONS},
    )
    results["run"] = {
        "model": model,
        "split": "validation" if with_answer else "test",
        "selection": None,
        "protocol": "vlmevalkit",
        "matching": "vlmevalkit",
        **info,
    }
    results["data"] = data
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    with (path / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return path, results


@pytest.fixture(scope="module")
def val_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[Path]]:
    run_dir, results = make_run_dir(tmp_path_factory.mktemp("runs") / "val", "org/tiny-vlm")
    return run_dir, results, reports.write_reports([run_dir], run_dir)


@pytest.fixture(scope="module")
def test_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[Path]]:
    run_dir, results = make_run_dir(
        tmp_path_factory.mktemp("runs") / "test", "org/tiny-vlm", with_answer=False
    )
    return run_dir, results, reports.write_reports([run_dir], run_dir)


def run_report_command(*argv: str) -> int:
    """``gmai-hf report ARGV`` through the subcommand's own parser (as ``gmai_hf.cli`` builds it)."""
    parser = argparse.ArgumentParser()
    report_command.add_arguments(parser)
    return report_command.main(parser.parse_args(argv))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_write_reports_returns_every_file_it_writes(val_run: tuple[Path, dict, list[Path]]) -> None:
    run_dir, _, paths = val_run
    names = {path.name for path in paths}
    assert {
        "report.md",
        "unmatched.jsonl",
        "summary.csv",
        "position_bias.png",
        "heatmap_task_modality.png",
    } <= names
    assert {f"accuracy_by_{dim}.csv" for dim in schema.BREAKDOWN_DIMENSIONS} <= names
    assert {"accuracy_by_clinical_vqa_task.png", "accuracy_by_department.png"} <= names
    assert all(path.is_file() and path.parent == run_dir for path in paths)


def test_report_md_overall_interval_rank_and_tables(val_run: tuple[Path, dict, list[Path]]) -> None:
    run_dir, results, _ = val_run
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    low, high = reports.wilson_interval(results["correct"], results["total"])
    assert f"**{100 * results['accuracy']:.1f}** [{100 * low:.1f}, {100 * high:.1f}]" in text
    rank, of, _, _ = reports.leaderboard_rank(results["accuracy"], "validation")
    assert f"{rank} of {of}" in text and of == 31
    for title in ("clinical VQA task", "department", "perceptual granularity", "modality"):
        assert f"## By {title}" in text
    assert "GPT-4o (leaderboard test)" in text and "Random (leaderboard test)" in text
    assert "## Weakest nodes of the tree" in text and "## Chosen letters (position bias)" in text
    node = results["by"]["clinical_vqa_task"]["Disease Diagnosis"]
    assert (
        f"| Disease Diagnosis (DD) | {100 * node['accuracy']:.1f} ({node['correct']}/{node['total']}) "
        f"| {100 * node['chance']:.1f} | 61.45 | 26.66 |" in text
    )
    overall = text.split("## Overall")[1].split("##")[0]
    assert f"| {100 * results['chance']:.1f} |" in overall  # chance beside the accuracy


def test_dimension_csvs_equal_the_metric(val_run: tuple[Path, dict, list[Path]]) -> None:
    run_dir, results, _ = val_run
    for dim in schema.BREAKDOWN_DIMENSIONS:
        rows = _read_csv(run_dir / f"accuracy_by_{dim}.csv")
        assert {row[dim] for row in rows} == set(results["by"][dim])
        for row in rows:
            node = results["by"][dim][row[dim]]
            assert float(row["accuracy"]) == node["accuracy"]
            assert (int(row["correct"]), int(row["total"])) == (node["correct"], node["total"])
            assert [float(row["ci95_low"]), float(row["ci95_high"])] == node["ci95"]
    (summary,) = _read_csv(run_dir / "summary.csv")
    assert (
        float(summary["accuracy"]) == results["accuracy"]
        and int(summary["unmatched"]) == results["unmatched"]
    )


def test_vlmevalkit_csvs_have_its_layout_and_the_metrics_numbers(
    val_run: tuple[Path, dict, list[Path]],
) -> None:
    run_dir, results, _ = val_run
    files = {
        "category": "tiny-vlm_GMAI-MMBench_VAL_acc.csv",
        "clinical_vqa_task": "tiny-vlm_GMAI-MMBench_VAL_clinical vqa task_acc.csv",
        "department": "tiny-vlm_GMAI-MMBench_VAL_department_acc.csv",
        "perceptual_granularity": "tiny-vlm_GMAI-MMBench_VAL_perceptual granularity_acc.csv",
    }
    for dim, name in files.items():
        path = run_dir / name
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2 and lines[0].startswith('"split","Overall",')  # QUOTE_ALL, as VLMEvalKit dumps
        (row,) = _read_csv(path)
        expected = {
            "None" if value == NONE_LABEL else value: node for value, node in results["by"][dim].items()
        }
        assert list(row) == ["split", "Overall", *sorted(expected)]
        assert row["split"] == "none" and float(row["Overall"]) == results["accuracy"]
        assert all(float(row[value]) == node["accuracy"] for value, node in expected.items())
    assert "None" in _read_csv(run_dir / files["department"])[0]


def test_unmatched_jsonl_holds_exactly_the_unmatched_predictions(
    val_run: tuple[Path, dict, list[Path]],
) -> None:
    run_dir, results, _ = val_run
    lines = (run_dir / "unmatched.jsonl").read_text(encoding="utf-8").splitlines()
    unmatched = [json.loads(line) for line in lines]
    assert len(unmatched) == results["unmatched"] > 0
    assert all(record["choice"] is None and "prediction" in record for record in unmatched)


def test_plots_are_pngs_of_sensible_size(val_run: tuple[Path, dict, list[Path]]) -> None:
    _, _, paths = val_run
    pngs = [path for path in paths if path.suffix == ".png"]
    assert len(pngs) == 4
    for path in pngs:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert 500 <= image.width <= 4000 and 350 <= image.height <= 4000, (path.name, image.size)


def test_test_split_run_reports_counts_without_answers(test_run: tuple[Path, dict, list[Path]]) -> None:
    run_dir, results, paths = test_run
    assert results["accuracy"] is None
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "no answers in test" in text and f"{results['unmatched']} (" in text
    assert not any("GMAI-MMBench_VAL" in path.name for path in paths)
    assert [path.name for path in paths if path.suffix == ".png"] == ["position_bias.png"]
    rows = _read_csv(run_dir / "accuracy_by_clinical_vqa_task.csv")
    assert sum(int(row["total"]) for row in rows) == results["total"]
    assert all(row["accuracy"] == "" for row in rows)


def test_several_runs_side_by_side(tmp_path: Path, val_run: tuple[Path, dict, list[Path]]) -> None:
    first, results, _ = val_run
    second, other = make_run_dir(tmp_path / "second", "org/tiny-vlm", seed=1)
    out = tmp_path / "compare"
    assert run_report_command(str(first), str(second), "--output-dir", str(out)) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    assert (
        "org/tiny-vlm (val)" in text and "org/tiny-vlm (second)" in text
    )  # same model: told apart by folder
    by_run = {row["run"]: row for row in _read_csv(out / "summary.csv")}
    assert float(by_run["org/tiny-vlm (val)"]["accuracy"]) == results["accuracy"]
    assert float(by_run["org/tiny-vlm (second)"]["accuracy"]) == other["accuracy"]
    assert (out / "tiny-vlm_val_GMAI-MMBench_VAL_acc.csv").is_file()
    assert (out / "heatmap_task_modality_tiny-vlm_second.png").is_file()
    lines = (out / "unmatched.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["run"] for line in lines} == set(by_run)


def test_report_command_explains_a_folder_that_is_not_a_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert run_report_command(str(tmp_path)) == 2
    assert "results.json" in caplog.text and "gmai-hf run" in caplog.text


def test_leaderboard_data_matches_the_benchmark_labels() -> None:
    board = reports.leaderboard()
    assert len(board["overall"]) == 30 and board["unit"] == "percent"
    assert {row["model"] for row in board["overall"]} >= {"Random", "GPT-4o", "Med-Flamingo"}
    assert set(reports.reference_rows("clinical_vqa_task")["GPT-4o"]) == set(schema.CLINICAL_VQA_TASKS)
    assert set(reports.reference_rows("clinical_vqa_task")["Random"]) == set(schema.CLINICAL_VQA_TASKS)
    assert set(reports.reference_rows("department")) == {"GPT-4o"}
    assert set(reports.reference_rows("department")["GPT-4o"]) == set(schema.DEPARTMENTS)
    assert reports.reference_rows("modality") == {}


@pytest.mark.parametrize(
    ("accuracy", "split", "expected"),
    [
        (0.99, "validation", (1, 31, None, "GPT-4o")),
        (0.5353, "validation", (2, 31, "GPT-4o", "Gemini 1.5")),  # a tie ranks below the leaderboard entry
        (0.0, "test", (31, 31, "Med-Flamingo", None)),
    ],
)
def test_leaderboard_rank(accuracy: float, split: str, expected: tuple) -> None:
    assert reports.leaderboard_rank(accuracy, split) == expected


def test_a_selected_run_is_flagged_as_not_comparable(tmp_path: Path) -> None:
    run_dir, results = make_run_dir(tmp_path / "ct", "tiny", n=30)
    results["run"].update(selection={"modality": ["CT", "MRI"]}, limit=20)
    (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
    reports.write_markdown([reports.load_run(run_dir)], tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "**Not comparable with the leaderboard**" in text
    assert "> - tiny: part of the split (modality = CT, MRI, first 20 questions)." in text
    assert "— (not comparable: see above)" in text and " of 31 " not in text  # no leaderboard rank


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {
                **OFFICIAL_DATA,
                "official": False,
                "source": "sample",
                "questions": 200,
                "problems": ["synthetic"],
            },
            "> **Synthetic sample** (tiny): made-up questions",
        ),
        (
            {
                **OFFICIAL_DATA,
                "official": False,
                "questions": 150,
                "problems": ["150 questions, the official validation split has 4550"],
            },
            "> - tiny: 150 questions, the official validation split has 4550.",
        ),
        (None, "> - tiny: which data it scored is not recorded"),
    ],
)
def test_data_that_is_not_the_official_release_gets_no_rank(
    tmp_path: Path, data: dict[str, Any] | None, expected: str
) -> None:
    run_dir, results = make_run_dir(tmp_path / "run", "tiny", data=data)
    reports.write_markdown([reports.load_run(run_dir)], tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    head = text.split("## Overall")[0]
    assert expected in head and "**Not comparable with the leaderboard**" in head
    rank, of, _, _ = reports.leaderboard_rank(results["accuracy"], "validation")
    assert f"{rank} of {of}" not in text
    assert "GPT-4o (leaderboard test, not comparable)" in text


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"protocol": "lossless"}, "--protocol lossless"),
        ({"matching": "strict"}, "--matching strict"),
        ({"failed": 3}, "3 question(s) failed"),
    ],
)
def test_other_protocols_and_failures_are_not_ranked(
    tmp_path: Path, info: dict[str, Any], reason: str
) -> None:
    run_dir, _ = make_run_dir(tmp_path / "run", "tiny", **info)
    assert any(reason in problem for problem in reports.comparability_problems(reports.load_run(run_dir)))


def test_official_runs_are_ranked_and_labelled(val_run: tuple[Path, dict, list[Path]]) -> None:
    run_dir, _, _ = val_run
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "Not comparable" not in text and "not comparable" not in text
    assert (
        "| org/tiny-vlm | org/tiny-vlm | vlmevalkit | vlmevalkit | none | "
        "local files, 4550 questions, official |" in text
    )
    assert "commit 69268c70" in text  # how the leaderboard itself was measured


def test_csv_cells_cannot_become_formulas(tmp_path: Path) -> None:
    run_dir, results = make_run_dir(tmp_path / "run", '=HYPERLINK("http://x")')
    for record_key in ("category",):
        results["by"][record_key]["@SUM(A1)"] = results["by"][record_key].pop(
            next(iter(results["by"][record_key]))
        )
    (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
    reports.write_reports([run_dir], tmp_path / "out")
    summary = (tmp_path / "out" / "summary.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in summary and ",=HYPERLINK" not in summary
    categories = (tmp_path / "out" / "accuracy_by_category.csv").read_text(encoding="utf-8")
    assert "'@SUM(A1)" in categories
    assert (
        reports.csv_cell("-1") == "'-1" and reports.csv_cell(-1.5) == -1.5 and reports.csv_cell("CT") == "CT"
    )


def test_the_same_run_named_twice_is_reported_once(
    tmp_path: Path, val_run: tuple[Path, dict, list[Path]]
) -> None:
    run_dir, _, _ = val_run
    out = tmp_path / "twice"
    assert run_report_command(str(run_dir), str(run_dir / ".." / run_dir.name), "--output-dir", str(out)) == 0
    assert len(_read_csv(out / "summary.csv")) == 1
