"""Prediction records, results.json (= the metric's output + run), and the test-split submission file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openpyxl import load_workbook

from gmai_hf import schema, scoring
from gmai_hf.results import XLSX_MAX_CELL_CHARS, build_records, write_outputs
from gmai_hf.testing.data import make_rows

RECORD_KEYS = [
    "index",
    "prediction",
    "choice",
    "matched_by",
    "answer",
    "hit",
    *schema.TREE_COLUMNS,
    "error",
    "fingerprint",
]


def _val_rows(n: int = 12) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "image"} for row in make_rows(n, seed=5)]


def present_letters(row: dict) -> list[str]:
    return [letter for letter in schema.OPTION_LETTERS if row.get(letter)]


def test_records_match_score_and_keep_errors() -> None:
    rows = _val_rows()
    first = rows[0]
    wrong = next(letter for letter in present_letters(first) if letter != first["answer"])
    predictions = {row["index"]: f"The answer is {row['answer']}." for row in rows[2:]}
    predictions[first["index"]] = f"({wrong})"
    errors = {rows[1]["index"]: "image of question 1 cannot be decoded"}
    records = build_records(reversed(rows), predictions, errors)
    assert [r["index"] for r in records] == sorted(r["index"] for r in rows)
    assert all(list(r) == RECORD_KEYS for r in records)
    assert records[0]["choice"] == wrong and records[0]["hit"] is False
    assert records[1] | {"prediction": "", "choice": None, "hit": False} == records[1]
    assert records[1]["error"].startswith("image of question 1")
    assert all(r["hit"] for r in records[2:])


def test_missing_prediction_names_the_questions() -> None:
    rows = _val_rows(3)
    with pytest.raises(ValueError, match=r"no prediction for 1 question\(s\) \(indices 2\)"):
        build_records(rows, {0: "A", 1: "B"})


def test_validation_outputs(tmp_path: Path) -> None:
    rows = _val_rows()
    records = build_records(
        rows, {row["index"]: row["answer"] for row in rows[:8]} | {9: "B", 8: "no", 10: "A", 11: "C"}
    )
    paths = write_outputs(tmp_path, records, {"model": "m", "split": "validation"}, "validation", rows)
    assert {p.name for p in paths} >= {"predictions.jsonl", "results.json", "report.md"}
    assert not (tmp_path / "submission.xlsx").exists()
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    results = json.loads((tmp_path / "results.json").read_text())
    expected = scoring.compute(
        [r["prediction"] for r in records],
        [r["answer"] for r in records],
        options=[[row[k] for k in schema.OPTION_LETTERS] for row in rows],
        **{dim: [row[dim] for row in rows] for dim in schema.BREAKDOWN_DIMENSIONS},
    )
    assert results == json.loads(
        json.dumps({**expected, "run": {"model": "m", "split": "validation"}, "data": None})
    )
    assert results["correct"] == sum(r["hit"] for r in records) and results["unmatched"] >= 1


def test_test_split_submission(tmp_path: Path) -> None:
    rows = [
        {k: v for k, v in r.items() if k != "image"}
        for r in make_rows(6, start_index=2000, with_answer=False)
    ]
    rows[3]["question"] = "=SUM(A1:A2) looks like a formula"
    tricky = {
        2000: "=1+1",
        2001: "https://example.org/" + "x" * 300 + " B",
        2002: "A\x07\x1b bell and escape",
        2003: "C" * (XLSX_MAX_CELL_CHARS + 50),
        2004: "D",
        2005: "",
    }
    records = build_records(reversed(rows), tricky)
    write_outputs(tmp_path, records, {"model": "m", "split": "test"}, "test", rows)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["accuracy"] is None and results["by"] is None and results["total"] == 6
    assert all(r["answer"] is None and r["hit"] is None for r in records)
    sheet = load_workbook(tmp_path / "submission.xlsx").active
    table = [[cell.value for cell in row] for row in sheet.iter_rows()]
    header = [name for name in schema.OFFICIAL_TEST_HEADER if name != "image"] + ["prediction"]
    assert table[0] == header
    assert [row[0] for row in table[1:]] == list(range(2000, 2006))
    prediction = {row[0]: row[-1] for row in table[1:]}
    assert prediction[2000] == "=1+1"  # literal text, not a formula
    assert prediction[2001] == tricky[2001]
    assert prediction[2002] == "A bell and escape"
    assert prediction[2003] == "C" * XLSX_MAX_CELL_CHARS
    assert prediction[2004] == "D" and prediction[2005] in (None, "")
    assert table[4][1] == rows[3]["question"]
    by_name = dict(zip(header, table[1], strict=True))
    assert by_name["clinical VQA task"] == rows[0]["clinical_vqa_task"]
    assert by_name["E"] == rows[0]["E"]


def test_validation_file_without_answers_reports_counts(tmp_path: Path) -> None:
    """A VAL file missing its answer column loads (with a warning); its run reports like test."""
    rows = [{k: v for k, v in r.items() if k != "image"} for r in make_rows(5, with_answer=False)]
    records = build_records(rows, {row["index"]: "A" for row in rows})
    write_outputs(tmp_path, records, {"model": "m", "split": "validation"}, "validation", rows)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["accuracy"] is None and results["total"] == 5 and results["unmatched"] == 0
    assert not (tmp_path / "submission.xlsx").exists()
