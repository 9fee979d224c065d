"""``gmai-hf score``: prediction files made elsewhere give the same numbers as a run."""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gmai_hf import external, protocols, results, schema
from gmai_hf.commands import score as score_command

_STYLES = ("{letter}", "({letter}) {text}", "The answer is {letter}.", "{text}", "None", "I am not sure.")


@pytest.fixture(scope="module")
def questions(data_dir: Path) -> list[dict[str, Any]]:
    return score_command.load_questions(data_dir, "validation")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, questions: list[dict[str, Any]], data_dir: Path) -> Path:
    """A run folder finished as the runner finishes one: raw answers -> build_records -> write_outputs."""
    rng = random.Random(3)
    raw = {}
    questions = [protocols.present_row(row, "vlmevalkit") for row in questions]  # as a run shows them
    for row in questions:
        present = [letter for letter in schema.OPTION_LETTERS if row[letter] is not None]
        letter = row["answer"] if rng.random() < 0.5 else rng.choice(present)
        raw[row["index"]] = rng.choice(_STYLES).format(letter=letter, text=row[letter])
    content = score_command.question_fingerprints(data_dir, "validation")  # as the runner keeps them
    records = results.build_records(questions, raw, fingerprints=content)
    run_dir = tmp_path_factory.mktemp("run")
    info = {"model": "Tiny-VLM", "split": "validation", "selection": None, "mode": "generate"}
    results.write_outputs(run_dir, records, info, "validation", questions)
    return run_dir


def vlmevalkit_frame(run_dir: Path, questions: list[dict[str, Any]]) -> pd.DataFrame:
    """A run's predictions as VLMEvalKit keeps them: the TSV's columns minus image, plus prediction."""
    raw = {r["index"]: r["prediction"] for r in map(json.loads, (run_dir / "predictions.jsonl").open())}
    columns = [name for name in schema.FEATURE_NAMES if name != "image"]
    frame = pd.DataFrame([{name: row[name] for name in columns} for row in questions])
    frame = frame.rename(columns=schema.FEATURE_TO_OFFICIAL)
    frame["prediction"] = frame["index"].map(raw)
    return frame


def scored(path: Path, data_dir: Path, out: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    score_command.add_arguments(parser)
    return score_command.main(
        parser.parse_args([str(path), "--data-dir", str(data_dir), "--output-dir", str(out), *extra])
    )


def _metric(run_dir: Path) -> dict[str, Any]:
    output = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    output.pop("run")
    output.pop("data")
    return output


def test_vlmevalkit_xlsx_of_a_run_scores_to_the_runs_numbers(
    tmp_path: Path, data_dir: Path, run: Path, questions: list[dict[str, Any]]
) -> None:
    path = tmp_path / "Tiny-VLM_GMAI-MMBench_VAL.xlsx"
    vlmevalkit_frame(run, questions).sample(frac=1, random_state=0).to_excel(
        path, index=False
    )  # any row order
    out = tmp_path / "scored"
    assert scored(path, data_dir, out) == 0
    assert _metric(out) == _metric(run)
    assert (out / "predictions.jsonl").read_text(encoding="utf-8") == (run / "predictions.jsonl").read_text(
        encoding="utf-8"
    )
    info = json.loads((out / "results.json").read_text(encoding="utf-8"))["run"]
    assert (info["model"], info["split"], info["mode"], info["selection"]) == (
        "Tiny-VLM",
        "validation",
        "score",
        None,
    )
    for name in ("report.md", "position_bias.png", "Tiny-VLM_GMAI-MMBench_VAL_department_acc.csv"):
        assert (out / name).is_file()


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".json", ".jsonl", ".columns.json"])
def test_every_format_reads_the_same_predictions(
    tmp_path: Path, run: Path, questions: list[dict[str, Any]], suffix: str
) -> None:
    frame = vlmevalkit_frame(run, questions)
    path = tmp_path / f"Tiny-VLM_GMAI-MMBench_VAL{suffix}"
    if suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_ALL)  # VLMEvalKit's dump_tsv
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_json(path)  # pandas' default: a dict of columns
    expected = [
        {"index": int(i), "prediction": p} for i, p in zip(frame["index"], frame["prediction"], strict=True)
    ]
    assert external.read_predictions(path).records == expected
    assert "None" in {p["prediction"] for p in expected}  # kept as text, not read as missing


def test_a_subset_of_the_split_is_scored_and_labelled(
    tmp_path: Path, data_dir: Path, run: Path, questions
) -> None:
    frame = vlmevalkit_frame(run, questions).iloc[:15][["index", "prediction"]]
    path = tmp_path / "half.jsonl"
    frame.to_json(path, orient="records", lines=True)
    out = tmp_path / "scored"
    assert scored(path, data_dir, out) == 0
    output = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert output["total"] == 15 and "15 of 40 questions" in output["run"]["selection"]
    expected = [
        r for r in map(json.loads, (run / "predictions.jsonl").open()) if r["index"] in set(frame["index"])
    ]
    assert output["correct"] == sum(r["hit"] for r in expected)


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"idx": 0, "prediction": "A"}], "no 'index' column"),
        ([{"index": 0, "answer": "A"}], "no 'prediction' column"),
        (
            [{"index": 0, "prediction": "A"}, {"index": 0, "prediction": "B"}],
            "appear more than once (e.g. 0)",
        ),
        (
            [{"index": 0, "prediction": "A"}, {"index": 4549, "prediction": "B"}],
            "not in the validation split (e.g. 4549",
        ),
        ([{"index": "x1", "prediction": "A"}], "row 2: index 'x1' is not a whole number"),
    ],
)
def test_bad_files_give_clear_errors(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture, rows: list[dict[str, Any]], message: str
) -> None:
    path = _write(tmp_path / "preds.csv", rows)
    assert scored(path, data_dir, tmp_path / "out") == 2
    assert message in caplog.text and str(path) in caplog.text
    assert not (tmp_path / "out").exists()


def test_the_test_split_cannot_be_scored(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "Tiny-VLM_GMAI-MMBench_TEST.csv", [{"index": 0, "prediction": "A"}])
    assert scored(path, data_dir, tmp_path / "out") == 2  # split inferred from the name
    assert "test split has no answers" in caplog.text
    caplog.clear()
    assert scored(tmp_path / "preds.csv", data_dir, tmp_path / "out", "--split", "test") == 2
    assert "test split has no answers" in caplog.text


def test_split_questions_without_answers_are_refused(questions: list[dict[str, Any]]) -> None:
    blind = [{**row, "answer": None} for row in questions[:3]]
    with pytest.raises(ValueError, match="no answers for 3 of the file's questions"):
        external.join_with_split(
            [{"index": row["index"], "prediction": "A"} for row in blind],
            blind,
            path="f.csv",
            split="validation",
        )


def test_xlsx_numbers_and_model_names(tmp_path: Path) -> None:
    path = tmp_path / "InternVL2-8B_GMAI-MMBench_VAL.xlsx"
    pd.DataFrame({"Index": [3.0, 7.0], "Prediction": [1.0, None]}).to_excel(path, index=False)
    assert external.read_predictions(path).records == [
        {"index": 3, "prediction": "1"},
        {"index": 7, "prediction": ""},
    ]
    assert external.model_name(path) == "InternVL2-8B"
    assert external.model_name(tmp_path / "my_preds.jsonl") == "my_preds"
    with pytest.raises(ValueError, match=r"unsupported file type '\.parquet'"):
        external.read_predictions(_write(tmp_path / "p.parquet", [{"index": 0, "prediction": "A"}]))


# --- Predictions of the wrong split, and files that are bad on purpose (issue 8) ------------------


def test_test_predictions_are_never_scored_against_validation_answers(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gmai_hf import runner

    run_dir = tmp_path / "x-test"
    assert (
        runner.run(runner.RunConfig(model="random", output_dir=run_dir, data_dir=str(data_dir), split="test"))
        == 0
    )
    predictions = run_dir / "predictions.jsonl"
    # indices 0..65 of the test split all exist in validation too: only the file can tell
    assert scored(predictions, data_dir, tmp_path / "out") == 2
    assert (
        "results.json" in caplog.text and "split 'test'" in caplog.text and "submission.xlsx" in caplog.text
    )
    caplog.clear()
    assert scored(predictions, data_dir, tmp_path / "out", "--split", "validation") == 2
    assert "holds test predictions" in caplog.text and "meaningless" in caplog.text
    caplog.clear()
    alone = tmp_path / "copied.jsonl"
    alone.write_text(predictions.read_text())  # without results.json beside it: its null answers tell
    assert scored(alone, data_dir, tmp_path / "out") == 2
    assert "answer column is empty in every row" in caplog.text
    caplog.clear()
    with_split = _write(tmp_path / "preds.csv", [{"index": 0, "prediction": "A", "split": "test"}])
    assert scored(with_split, data_dir, tmp_path / "out") == 2 and "split column says 'test'" in caplog.text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("preds.csv", "index,prediction\n0,caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
        ("preds.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (
            "preds.jsonl",
            b'{"index": 0, "prediction": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
            "nested too deeply",
        ),
        ("preds.xlsx", b"PK\x03\x04 not really a zip", "not an xlsx workbook"),
    ],
)
def test_bad_files_end_in_one_line_naming_the_file(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert scored(path, data_dir, tmp_path / "out") == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert message in record.getMessage() and str(path) in record.getMessage()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("preds.json", '{"index": [0, 1, 2], "prediction": ["A", "B"]}', "unequal length"),
        (
            "preds.json",
            '{"index": {"0": 0, "1": 1}, "prediction": {"0": "A", "2": "B"}}',
            "cover different rows",
        ),
        ("preds.csv", "index,prediction\n0,A\n1\n", "row 3: 1 field(s) but the header has 2"),
        ("preds.tsv", "index\tprediction\n0\tA\textra\n", "row 2: 3 field(s) but the header has 2"),
        ("preds.jsonl", '{"index": 0, "prediction": "A"}\n{"index": 1}\n', "row 2: no 'prediction'"),
        ("preds.csv", "index,Index,prediction\n0,1,A\n", "columns 'index' and 'Index' both read as"),
        ("preds.jsonl", '{"index": 0, "Index": 1, "prediction": "A"}\n', "columns 'index' and 'Index'"),
        ("preds.tsv", "index\tprediction\tindex\n0\tA\t1\n", "columns 'index' and 'index'"),
    ],
    ids=[
        "json-lists",
        "json-dicts",
        "csv-short",
        "tsv-long",
        "jsonl-missing",
        "csv-case",
        "jsonl-case",
        "tsv-twice",
    ],
)
def test_unequal_columns_or_two_index_columns_are_one_line(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture, name: str, content: str, message: str
) -> None:
    """Issue 17: read on, such files scored a shifted, empty or arbitrary column (or a traceback)."""
    path = tmp_path / name
    path.write_text(content)
    assert scored(path, data_dir, tmp_path / "out") == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert message in record.getMessage() and str(path) in record.getMessage()
    assert "\n" not in record.getMessage() and not (tmp_path / "out").exists()


def _xlsx_with_entities(path: Path) -> Path:
    """A workbook whose sheet declares the billion-laughs entities and uses them in a cell."""
    import zipfile

    pd.DataFrame({"index": [0], "prediction": ["A"]}).to_excel(path, index=False)
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i else "&lol;" * 10}">' for i in range(9)
    )
    source = zipfile.ZipFile(path)
    members = {info.filename: source.read(info.filename) for info in source.infolist()}
    source.close()
    sheet = members["xl/worksheets/sheet1.xml"].decode()
    sheet = sheet.replace("<worksheet ", f"<!DOCTYPE worksheet [{entities}]><worksheet ", 1)
    members["xl/worksheets/sheet1.xml"] = sheet.replace("<t>A</t>", "<t>&lol8;</t>").encode()
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def test_a_hostile_xlsx_is_refused(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    bomb = _xlsx_with_entities(tmp_path / "bomb.xlsx")
    started = time.time()
    assert scored(bomb, data_dir, tmp_path / "out") == 2
    assert (
        time.time() - started < 20 and "cannot read the workbook" in caplog.text and str(bomb) in caplog.text
    )
    caplog.clear()
    normal = tmp_path / "big.xlsx"
    pd.DataFrame({"index": [0], "prediction": ["A"]}).to_excel(normal, index=False)
    monkeypatch.setattr(external, "MAX_XLSX_BYTES", 100)  # as if it unpacked to more than 1 GiB
    assert scored(normal, data_dir, tmp_path / "out") == 2 and "unpacks to" in caplog.text


def test_the_sample_says_which_answers_the_protocol_hides_and_warns_of_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18: every command on the sample warned "15 answer(s) name an option the question does not
    have"; those are options the vlmevalkit protocol does not show, and chance counts them as 0."""
    import logging

    from gmai_hf import SAMPLE_DIR

    rows = score_command.load_questions(SAMPLE_DIR, "validation")
    path = tmp_path / "Model_GMAI-MMBench_VAL.jsonl"
    path.write_text(
        "".join(json.dumps({"index": r["index"], "prediction": r["answer"]}) + "\n" for r in rows)
    )
    for protocol in protocols.PROTOCOLS:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            score_command.score(path, data_dir=SAMPLE_DIR, output_dir=tmp_path / protocol, protocol=protocol)
        scored = json.loads((tmp_path / protocol / "results.json").read_text())
        assert "name an option" not in caplog.text
        notes = [r.getMessage() for r in caplog.records if "the protocol did not show" in r.getMessage()]
        if protocol == "vlmevalkit":
            assert (
                len(notes) == 1
                and notes[0].startswith("15 answer(s)")
                and "--protocol vlmevalkit" in notes[0]
            )
            assert (scored["correct"], round(100 * scored["chance"], 1)) == (185, 28.9)
        else:
            assert not notes and scored["correct"] == 200
        record = json.loads((tmp_path / protocol / "predictions.jsonl").read_text().splitlines()[0])
        assert protocols.HIDDEN not in record
