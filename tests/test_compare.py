"""``gmai-hf compare``: paired statistics checked against known cases, joins refused or labelled,
the outputs, and the "significantly below the best" column of multi-run reports."""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from test_reports import make_run_dir

from gmai_hf import paired, reports
from gmai_hf.commands import compare as compare_command
from gmai_hf.compare import compare, write_comparison


def run_compare(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    return compare_command.main(parser.parse_args(argv))


def _with_hits(run_dir: Path, hit: Any) -> Path:
    """Rewrite a run's answers so that ``hit(record)`` decides which questions it gets right."""
    records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    for record in records:
        record["hit"] = bool(hit(record))
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    results = json.loads((run_dir / "results.json").read_text())
    results["accuracy"] = sum(r["hit"] for r in records) / len(records)
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


# --- statistics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a_only", "b_only", "expected"),
    [
        (9, 1, 2 * (1 + 10) / 2**10),  # two-sided exact binomial: 2 * P(X <= 1 | n=10, p=1/2)
        (0, 6, 2 / 2**6),
        (0, 5, 2 / 2**5),
        (5, 5, 1.0),
        (0, 0, 1.0),
        (30, 12, 2 * sum(math.comb(42, k) for k in range(13)) / 2**42),
    ],
)
def test_mcnemar_exact_equals_the_binomial(a_only: int, b_only: int, expected: float) -> None:
    assert paired.mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-12)
    assert paired.mcnemar_exact(b_only, a_only) == pytest.approx(expected, rel=1e-12)


def test_six_discordant_pairs_are_the_fewest_that_can_decide() -> None:
    assert paired.smallest_decisive(0.05) == 6
    assert paired.mcnemar_exact(6, 0) < 0.05 <= paired.mcnemar_exact(5, 0)


def test_newcombe_interval_behaves_and_covers() -> None:
    pairs = paired.Pairs(both=40, a_only=15, b_only=5, neither=40)
    low, high = paired.newcombe_interval(pairs)
    assert low < 0.10 < high and low >= -1 and high <= 1
    swapped = paired.newcombe_interval(paired.Pairs(40, 5, 15, 40))
    assert swapped == pytest.approx((-high, -low))
    low, high = paired.newcombe_interval(paired.Pairs(10, 0, 0, 0))  # both always right: no correlation term
    assert low == pytest.approx(-high) and 0.2 < high < 0.35
    # coverage: 1,000 simulated pairs of equally good, correlated models; the true difference is 0
    rng = random.Random(0)
    covered = 0
    for _ in range(1000):
        a_hits, b_hits = [], []
        for _ in range(60):
            shared = rng.random() < 0.5
            a_hits.append(shared or rng.random() < 0.3)
            b_hits.append(shared or rng.random() < 0.3)
        low, high = paired.newcombe_interval(paired.Pairs.count(a_hits, b_hits))
        covered += low <= 0 <= high
    assert 930 <= covered <= 985, covered


def test_benjamini_hochberg_and_identical_nodes_counting_once() -> None:
    nodes = {k: {"p_value": p} for k, p in zip("abcd", (0.01, 0.04, 0.03, 0.01), strict=True)}
    paired.adjust(nodes, {"a": 1, "b": 2, "c": 3, "d": 1}, 0.05)  # a and d hold the same questions
    assert [nodes[k]["p_adjusted"] for k in "abcd"] == pytest.approx([0.03, 0.04, 0.04, 0.03])
    assert [nodes[k]["significant"] for k in "abcd"] == [True, True, True, True]


# --- comparisons -----------------------------------------------------------------------------------


def test_a_run_compared_with_itself_differs_nowhere(tmp_path: Path) -> None:
    run_dir, _ = make_run_dir(tmp_path / "run", "org/tiny-vlm", n=80)
    result = compare(reports.load_run(run_dir), reports.load_run(run_dir))
    nodes = [result["overall"], *(n for values in result["by"].values() for n in values.values())]

    def walk(children: dict[str, Any]) -> None:
        for child in children.values():
            nodes.append(child)
            walk(child.get("children") or {})

    for values in result["tree"].values():
        walk(values)
    assert len(nodes) > 100
    assert all(n["difference"] == 0 and n["p_value"] == 1 and n["p_adjusted"] == 1 for n in nodes)
    assert not any(n["significant"] for n in nodes) and result["settings_differ"] == {}


def test_a_real_difference_is_found_where_it_is(tmp_path: Path) -> None:
    a_dir, _ = make_run_dir(tmp_path / "a", "model-a", n=400, seed=1)
    b_dir, _ = make_run_dir(tmp_path / "b", "model-b", n=400, seed=1)
    rng = random.Random(2)
    base = {i: rng.random() < 0.5 for i in range(400)}
    _with_hits(a_dir, lambda r: base[r["index"]] or r["department"] == "Dermatology")
    _with_hits(b_dir, lambda r: base[r["index"]])
    paths = write_comparison(a_dir, b_dir, tmp_path / "out")
    assert {p.name for p in paths} == {"comparison.json", "comparison.md", "comparison.png"}
    result = json.loads((tmp_path / "out" / "comparison.json").read_text())
    derm = result["by"]["department"]["Dermatology"]
    assert derm["significant"] and derm["b_only"] == 0 and derm["difference"] > 0
    assert derm["a_only"] == sum(1 for i in range(400) if not base[i] and _dept(a_dir, i) == "Dermatology")
    assert all(
        not node["significant"]
        for value, node in result["by"]["department"].items()
        if value != "Dermatology"
    )
    for key in (
        "n",
        "accuracy_a",
        "accuracy_b",
        "difference",
        "ci95",
        "a_only",
        "b_only",
        "p_value",
        "p_adjusted",
        "significant",
    ):
        assert key in result["overall"]
    assert result["tree"]["department"]["Dermatology"]["children"]
    text = (tmp_path / "out" / "comparison.md").read_text()
    overall = text.split("## Overall")[1].split("##")[0]
    assert "model-a" in overall and "McNemar p =" in overall
    significant = text.split("## Where the difference is significant")[1]
    assert significant.index("Dermatology") < significant.index("distinct nodes had fewer than 6")


def _dept(run_dir: Path, index: int) -> str:
    for line in (run_dir / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["index"] == index:
            return record["department"]
    raise KeyError(index)


def test_settings_that_differ_beyond_the_model_are_said_first(tmp_path: Path) -> None:
    a_dir, _ = make_run_dir(tmp_path / "a", "model-a", n=40)
    b_dir, _ = make_run_dir(tmp_path / "b", "model-b", n=40, protocol="lossless", max_new_tokens=32)
    write_comparison(a_dir, b_dir, tmp_path / "out")
    text = (tmp_path / "out" / "comparison.md").read_text()
    assert text.split("\n")[2].startswith(
        "> **The runs differ in more than the model**: protocol: vlmevalkit vs lossless"
    )
    assert "max_new_tokens" in text.split("\n")[2]
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["settings_differ"]["protocol"] == [
        "vlmevalkit",
        "lossless",
    ]


def test_joins_are_refused_or_labelled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    full, _ = make_run_dir(tmp_path / "full", "a", n=60)
    part, _ = make_run_dir(tmp_path / "part", "b", n=30)  # the first 30 of the same questions: a slice
    result = compare(reports.load_run(full), reports.load_run(part))
    assert result["questions"] == 30 and "compared on the 30 questions both runs answered" in result["note"]
    other, _ = make_run_dir(tmp_path / "other", "c", n=60, seed=0)
    records = [json.loads(line) for line in (other / "predictions.jsonl").read_text().splitlines()]
    records[3]["answer"] = "E" if records[3]["answer"] != "E" else "A"
    (other / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert run_compare(str(full), str(other), "--output-dir", str(tmp_path / "x")) == 2
    assert "scored different data: question" in caplog.text
    caplog.clear()
    test_run, _ = make_run_dir(tmp_path / "test", "t", n=20, with_answer=False)
    assert run_compare(str(full), str(test_run), "--output-dir", str(tmp_path / "x")) == 2
    assert "on test: compare runs of one split" in caplog.text


def test_prediction_files_are_scored_then_compared(tmp_path: Path, data_dir: Path) -> None:
    from gmai_hf.commands.score import load_questions

    rows = load_questions(data_dir, "validation")
    for name, shift in (("A", 0), ("B", 1)):
        lines = []
        for row in rows:
            present = [letter for letter in "ABCDE" if row[letter] is not None]
            letter = row["answer"] if (row["index"] + shift) % 3 else present[0]
            lines.append(json.dumps({"index": row["index"], "prediction": f"The answer is {letter}."}))
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert (
        run_compare(
            str(tmp_path / "A.jsonl"),
            str(tmp_path / "B.jsonl"),
            "--data-dir",
            str(data_dir),
            "--output-dir",
            str(out),
        )
        == 0
    )
    result = json.loads((out / "comparison.json").read_text())
    assert result["questions"] == 40 and result["a"]["label"] == "A" and result["b"]["label"] == "B"
    assert result["a"]["path"] == str(tmp_path / "A.jsonl")  # the file compared, not a scratch folder


def test_a_report_of_several_runs_marks_those_below_the_best(tmp_path: Path) -> None:
    dirs = [make_run_dir(tmp_path / name, name, n=400, seed=1)[0] for name in ("best", "close", "worse")]
    rng = random.Random(4)
    base = {i: rng.random() < 0.6 for i in range(400)}
    _with_hits(dirs[0], lambda r: base[r["index"]])
    _with_hits(dirs[1], lambda r: base[r["index"]] and r["index"] % 40)
    _with_hits(dirs[2], lambda r: base[r["index"]] and r["index"] % 3)
    below = reports.below_best([reports.load_run(d) for d in dirs], "perceptual_granularity")
    assert below and all(runs == ["worse"] for runs in below.values())
    reports.write_reports(dirs, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    section = text.split("## By perceptual granularity")[1].split("## ")[0]
    assert "| significantly below the best |" in section
    assert section.count("| worse |") == 1 + len(below)  # the header, and one row per value
    assert reports.below_best([reports.load_run(dirs[0])], "department") is None
