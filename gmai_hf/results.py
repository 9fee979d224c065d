"""A run's outputs: prediction records, ``predictions.jsonl``, ``results.json``, ``submission.xlsx``.

Both ``gmai-hf run`` and ``gmai-hf score`` finish through :func:`write_outputs`, so a run folder
looks the same whichever produced it, and ``results.json`` holds exactly what the ``evaluate``
metric returns (``scoring.compute``) plus the ``run`` description.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gmai_hf import protocols, reports, schema, scoring
from gmai_hf.files import atomic_output, write_atomic
from gmai_hf.matching import check_mode, present_options

if TYPE_CHECKING:
    from gmai_hf.judge import Judge

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_FILE = "results.json"
SUBMISSION_FILE = "submission.xlsx"

#: Excel's limit on the characters of one cell; longer text is cut (and a warning logged).
XLSX_MAX_CELL_CHARS = 32767


def library_versions() -> dict[str, str]:
    """Versions of gmai-hf, Python and the libraries that shape a result, for ``results.json``."""
    from importlib.metadata import PackageNotFoundError, version

    from gmai_hf import __version__

    found = {"gmai_hf": __version__, "python": platform.python_version()}
    for package in ("torch", "transformers", "accelerate", "datasets"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def build_records(
    questions: Iterable[Mapping[str, Any]],
    predictions: Mapping[int, str | None],
    errors: Mapping[int, str] | None = None,
    matching: str = "vlmevalkit",
    judge: Judge | None = None,
    fingerprints: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """One record per question, in index order (the keys of a ``predictions.jsonl`` line).

    ``questions``: dataset rows (feature names; ``image`` not needed), with options as the run's
    protocol showed them. ``predictions``: index -> raw model text. ``errors``: index -> why the
    question could not be answered (its prediction is then empty and it scores as wrong).
    ``judge`` reads what exact matching cannot. ``hit`` and ``answer`` are null without answers
    (test); ``matched_by`` says how the choice was found (``exact``, ``judge``, ``judge_failed``).
    ``fingerprints``: index -> the question's content fingerprint
    (:func:`gmai_hf.fingerprints.question_fingerprint`), kept as ``fingerprint`` (null when not
    given) so that ``gmai-hf compare`` can tell whether two runs asked the same questions.
    """
    check_mode(matching)
    errors = errors or {}
    rows = sorted(questions, key=lambda r: int(r["index"]))
    indices = [int(row["index"]) for row in rows]
    missing = [index for index in indices if index not in predictions and index not in errors]
    if missing:
        raise ValueError(
            f"no prediction for {len(missing)} question(s) (indices {schema.preview_indices(missing, 10)}): "
            "give one per selected question"
        )
    texts = [predictions.get(index) or "" for index in indices]
    choices = [present_options([row.get(letter) for letter in schema.OPTION_LETTERS]) for row in rows]
    chosen, how = scoring.choose(
        # a failed question has no answer to read: None, neither matched nor judged
        [None if index in errors else text for index, text in zip(indices, texts, strict=True)],
        choices,
        matching,
        judge,
        [row.get("question") for row in rows],
    )
    records = []
    for index, row, text, choice, matched_by in zip(indices, rows, texts, chosen, how, strict=True):
        answer = row.get("answer")
        records.append(
            {
                "index": index,
                "prediction": text,
                "choice": choice,
                "matched_by": matched_by,
                "answer": answer,
                "hit": None if answer is None else choice == answer,
                **{column: row.get(column) for column in schema.TREE_COLUMNS},
                "error": errors.get(index),
                "fingerprint": (fingerprints or {}).get(index),
            }
        )
    return records


def compute_results(
    records: Sequence[Mapping[str, Any]],
    questions: Mapping[int, Mapping[str, Any]],
    split: str,
    matching: str = "vlmevalkit",
    judge: Judge | None = None,
) -> dict[str, Any]:
    """``scoring.compute`` on the records' choices (read once, by :func:`build_records`, with the
    same matching and judge): the metric's output for the run (answers hidden in test)."""
    rows = [questions[int(r["index"])] for r in records]
    references = [r["answer"] for r in records]
    if split == "test" or all(answer is None for answer in references):
        if split != "test":
            logger.warning("the %s questions have no answers: reporting counts only, no accuracy", split)
        references = None
    return scoring.compute(
        predictions=[r["prediction"] for r in records],
        references=references,
        options=[[row.get(letter) for letter in schema.OPTION_LETTERS] for row in rows],
        **{dim: [r.get(dim) for r in records] for dim in schema.BREAKDOWN_DIMENSIONS},
        matching=matching,
        judge=judge,
        chosen=[r["choice"] for r in records],
        hidden=[row.get(protocols.HIDDEN, ()) for row in rows],
    )


def write_outputs(
    output_dir: str | Path,
    records: Sequence[Mapping[str, Any]],
    run_info: Mapping[str, Any],
    split: str,
    questions: Iterable[Mapping[str, Any]],
    matching: str = "vlmevalkit",
    data: Mapping[str, Any] | None = None,
    judge: Judge | None = None,
) -> list[Path]:
    """Write predictions.jsonl, results.json, submission.xlsx (test only) and the reports.

    ``questions``: the dataset rows the records answer (question and option texts are needed
    for text matching and for the submission file). ``data``: which data was scored
    (``identity.describe``), recorded as ``results["data"]``. Returns the paths written.
    """
    if split not in schema.SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(schema.SPLITS)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    by_index = {int(row["index"]): row for row in questions}
    absent = [int(r["index"]) for r in records if int(r["index"]) not in by_index]
    if absent:
        raise ValueError(
            f"records for indices {schema.preview_indices(absent, 10)} have no question row: "
            "pass the dataset's rows"
        )
    results = {
        **compute_results(records, by_index, split, matching, judge),
        "run": dict(run_info),
        "data": dict(data) if data is not None else None,
    }
    paths = [
        write_atomic(output_dir / PREDICTIONS_FILE, "".join(json.dumps(r) + "\n" for r in records)),
        write_atomic(output_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n"),
    ]
    if split == "test":
        paths.append(write_submission(output_dir / SUBMISSION_FILE, records, by_index))
    paths += reports.write_reports([output_dir], output_dir)
    return paths


def _cell_text(value: Any, where: str) -> Any:
    """A value Excel keeps as typed: illegal control characters dropped, over-long text cut."""
    if not isinstance(value, str):
        return value
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    text = ILLEGAL_CHARACTERS_RE.sub("", value)
    if len(text) > XLSX_MAX_CELL_CHARS:
        logger.warning("%s: %d characters, cut to Excel's limit of %d", where, len(text), XLSX_MAX_CELL_CHARS)
        text = text[:XLSX_MAX_CELL_CHARS]
    return text


def write_submission(
    path: str | Path, records: Sequence[Mapping[str, Any]], questions: Mapping[int, Mapping[str, Any]]
) -> Path:
    """The organisers' file: the official TSV columns (original names, no ``image``) + ``prediction``.

    Rows in index order. Every text is written as a string cell: a prediction such as ``=A`` or
    a URL stays literal text (not a formula or a hyperlink), and nothing is silently dropped.
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    path = Path(path)
    header = [name for name in schema.OFFICIAL_TEST_HEADER if name != "image"]
    if any(questions[int(r["index"])].get("answer") is not None for r in records):
        header.insert(header.index("E") + 1, "answer")
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Sheet1")
    sheet.append([*header, "prediction"])
    for record in sorted(records, key=lambda r: int(r["index"])):
        row = questions[int(record["index"])]
        values = [row.get(schema.OFFICIAL_TO_FEATURE[name]) for name in header] + [record["prediction"]]
        cells = []
        for name, value in zip([*header, "prediction"], values, strict=True):
            cell = WriteOnlyCell(
                sheet, value=_cell_text(value, f"{path}, question {record['index']}, {name}")
            )
            if isinstance(cell.value, str):
                cell.data_type = "s"
            cells.append(cell)
        sheet.append(cells)
    with atomic_output(path) as tmp:
        workbook.save(tmp)
    return path
