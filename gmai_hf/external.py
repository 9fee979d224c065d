"""Read prediction files made elsewhere (VLMEvalKit's ``<model>_GMAI-MMBench_VAL.xlsx`` and kin).

Only two columns matter, ``index`` and ``prediction`` (any case: VLMEvalKit lower-cases column
names); answers, options and tree columns come from the dataset itself. Two others are read as
hints of which split the file answers (:class:`Predictions`): a ``split`` column, and an
``answer`` column that is empty everywhere (test answers are hidden). Values are read as text,
without pandas' habit of turning ``None``/``NA``/``nan`` into missing values, so a prediction is
scored as written.

Files come from elsewhere, so every way they can be bad ends in a ``ValueError`` naming the file:
text that is not UTF-8, JSON nested past Python's recursion limit, and hostile xlsx files (XML
entity bombs are refused by ``defusedxml``, which openpyxl uses when it is installed; a workbook
that unpacks to more than :data:`MAX_XLSX_BYTES` is refused before it is read).
"""

from __future__ import annotations

import csv
import json
import math
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmai_hf import schema

SUFFIXES: tuple[str, ...] = (".xlsx", ".tsv", ".csv", ".json", ".jsonl")
#: What VLMEvalKit logs when its judge failed three times and it drew a random letter.
VLMEVALKIT_RANDOM_PICK = "Failed to predict, thus randomly generate one."
REQUIRED_COLUMNS: tuple[str, ...] = ("index", "prediction")
#: The columns read (any case): the required ones, and what a file may say of its split.
COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "split", "answer", "log")
#: The most an xlsx may unpack to (VLMEvalKit's file for all 26,000 questions is a few tens of MB).
MAX_XLSX_BYTES = 1 << 30

#: ``<model>_GMAI-MMBench_VAL.xlsx`` (VLMEvalKit's name for a model's prediction file).
_VLMEVALKIT_NAME = re.compile(r"^(?P<model>.+?)_GMAI[-_]MMBench_(?P<split>VAL|TEST)", re.IGNORECASE)


def model_name(path: str | Path) -> str:
    """The model a VLMEvalKit prediction file is named after, else the file's stem."""
    stem = Path(path).stem
    found = _VLMEVALKIT_NAME.match(stem)
    return found["model"] if found else stem


def _rows_xlsx(path: Path) -> Iterator[list[Any]]:
    from openpyxl import load_workbook

    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile:
        raise ValueError(
            f"{path}: not an xlsx workbook (not a zip archive); save it again from Excel"
        ) from None
    if unpacked > MAX_XLSX_BYTES:
        raise ValueError(
            f"{path}: the workbook unpacks to {unpacked:,} bytes (more than {MAX_XLSX_BYTES:,}); it is not a "
            "prediction file (or a hostile one): export the predictions as .jsonl or .tsv"
        )
    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl and defusedxml raise many types for damaged or hostile files
        raise ValueError(f"{path}: cannot read the workbook ({type(error).__name__}: {error})") from None
    try:
        for row in workbook.worksheets[0].iter_rows(values_only=True):
            yield list(row)
    except Exception as error:
        raise ValueError(f"{path}: cannot read the workbook ({type(error).__name__}: {error})") from None
    finally:
        workbook.close()


def _rows_delimited(path: Path, delimiter: str) -> Iterator[list[Any]]:
    csv.field_size_limit(1 << 30)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        yield from csv.reader(handle, delimiter=delimiter)


def _load_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to be a prediction file") from None


def _records_json(path: Path) -> list[dict[str, Any]]:
    """Records from a JSON list of objects, or a dict of columns (pandas ``to_json`` orients)."""
    data = _load_json(path.read_text(encoding="utf-8"), str(path))
    if isinstance(data, dict):
        columns = {str(key): value for key, value in data.items()}
        if all(isinstance(column, (dict, list)) for column in columns.values()):
            keys = [list(c) if isinstance(c, dict) else list(range(len(c))) for c in columns.values()]
            if any(set(other) != set(keys[0]) for other in keys[1:]):
                lengths = ", ".join(f"{name}: {len(column)}" for name, column in columns.items())
                raise ValueError(
                    f"{path}: the columns are of unequal length or cover different rows (values: {lengths}); "
                    "every column needs one value per row: fix the file"
                )
            row_keys = keys[0] if keys else []
            return [
                {
                    name: (column.get(key) if isinstance(column, dict) else column[key])
                    for name, column in columns.items()
                }
                for key in row_keys
            ]
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return data
    raise ValueError(
        f"{path}: JSON must be a list of objects with 'index' and 'prediction', or a dict of columns "
        "(pandas DataFrame.to_json); found something else"
    )


def _records_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            item = _load_json(line, f"{path}, line {line_number}")
            if not isinstance(item, dict):
                raise ValueError(f"{path}, line {line_number}: expected a JSON object per line")
            yield item


def _records_from_rows(rows: Iterable[list[Any]], path: Path, same_width: bool) -> Iterator[dict[str, Any]]:
    """Rows as dicts by header name; ``same_width``: a row with more or fewer fields than the header
    (a cut or hand-edited CSV/TSV) is an error, not a shifted or empty prediction."""
    rows = iter(rows)
    header = next(rows, None)
    if header is None:
        return
    names = ["" if name is None else str(name) for name in header]
    _check_names(names, path)
    for number, row in enumerate(rows, 2):
        if any(value not in (None, "") for value in row):
            if same_width and len(row) != len(names):
                raise ValueError(
                    f"{path}, row {number}: {len(row)} field(s) but the header has {len(names)}: the columns "
                    "are of unequal length (a cut or hand-edited file?); fix that row"
                )
            yield dict(zip(names, row, strict=False))


def _check_names(names: Iterable[str], path: Path) -> None:
    """One column per meaning: with ``index`` and ``Index`` (or a name twice), which one counts?"""
    seen: dict[str, str] = {}
    for name in names:
        key = name.strip().lower()
        if key in COLUMNS and key in seen:
            raise ValueError(
                f"{path}: columns {seen[key]!r} and {name!r} both read as the {key!r} column; keep one"
            )
        seen[key] = name


def _index(value: Any, path: Path, row: int) -> int:
    """An index as an int; xlsx gives floats (``12.0``), CSV gives text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise ValueError(f"{path}, row {row}: index {value!r} is not a whole number; fix or drop that row")
    return int(number)


def _prediction(value: Any) -> str:
    """Predictions as text, as VLMEvalKit does (``astype(str)``); an empty cell is ``''``."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Predictions:
    """A prediction file's rows (``index``, ``prediction``) and what the file says of its split."""

    records: list[dict[str, Any]]
    #: The value of a ``split`` column, when every row gives the same one.
    split: str | None = None
    #: The file has an ``answer`` column that is empty in every row, as test files do.
    answers_hidden: bool = False
    #: Indices whose ``log`` (VLMEvalKit's ``_result`` files) says its judge failed and it drew a
    #: random letter ("Failed to predict, thus randomly generate one.").
    random_picks: list[int] = field(default_factory=list)


def read_predictions(path: str | Path) -> Predictions:
    """The predictions in ``path`` (xlsx, tsv, csv, json or jsonl), in file order.

    Raises ``ValueError`` naming the file (and row) for an unknown format, text that is not
    UTF-8, a missing ``index`` or ``prediction`` column, or an index that is not a whole number.
    Duplicates are the caller's to judge (it knows the split).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prediction file")
    try:
        return _read(path)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); save the file as UTF-8"
        ) from None


def _read(path: Path) -> Predictions:
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        records: Iterable[dict[str, Any]] = _records_from_rows(_rows_xlsx(path), path, same_width=False)
    elif suffix in (".tsv", ".csv"):
        delimited = _rows_delimited(path, "\t" if suffix == ".tsv" else ",")
        records = _records_from_rows(delimited, path, same_width=True)
    elif suffix == ".json":
        records = _records_json(path)
    elif suffix == ".jsonl":
        records = _records_jsonl(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    out = []
    columns: dict[str, str] | None = None
    names: list[str] = []
    splits: set[str] = set()
    answered = False
    random_picks: list[int] = []
    for row_number, record in enumerate(records, 2 if suffix in (".xlsx", ".tsv", ".csv") else 1):
        if columns is None:
            names = [str(name) for name in record]
            _check_names(names, path)
            lower = {name.strip().lower(): name for name in record}
            missing = [name for name in REQUIRED_COLUMNS if name not in lower]
            if missing:
                raise ValueError(
                    f"{path}: no {' or '.join(repr(m) for m in missing)} column (found: "
                    f"{', '.join(repr(name) for name in names)}); a prediction file needs "
                    "'index' (the question's index in the dataset) and 'prediction' (the model's raw answer)"
                )
            columns = {name: lower[name] for name in COLUMNS if name in lower}
        absent = [columns[name] for name in REQUIRED_COLUMNS if columns[name] not in record]
        if absent:
            raise ValueError(
                f"{path}, row {row_number}: no {' or '.join(map(repr, absent))}, which earlier rows have: "
                "every row needs an index and a prediction"
            )
        out.append(
            {
                "index": _index(record.get(columns["index"]), path, row_number),
                "prediction": _prediction(record.get(columns["prediction"])),
            }
        )
        if "split" in columns and record.get(columns["split"]) not in (None, ""):
            splits.add(str(record[columns["split"]]).strip().lower())
        if "answer" in columns and record.get(columns["answer"]) not in (None, ""):
            answered = True
        if "log" in columns and VLMEVALKIT_RANDOM_PICK in str(record.get(columns["log"]) or ""):
            random_picks.append(out[-1]["index"])
    if columns is None:
        raise ValueError(f"{path}: the file holds no predictions")
    return Predictions(
        out,
        split=splits.pop() if len(splits) == 1 else None,
        answers_hidden="answer" in columns and not answered,
        random_picks=random_picks,
    )


def join_with_split(
    predictions: Sequence[Mapping[str, Any]],
    questions: Sequence[Mapping[str, Any]],
    *,
    path: str | Path,
    split: str,
) -> tuple[dict[int, str], list[Mapping[str, Any]]]:
    """Match a file's predictions to the split's questions by ``index``.

    Returns ``(index -> prediction, the questions the file answers)``. A file may answer a subset
    of the split (VLMEvalKit allows it); duplicates, indices not in the split and questions
    without an answer are errors, each naming the file, the indices and what to do.
    """
    counts = Counter(int(p["index"]) for p in predictions)
    duplicates = sorted(index for index, n in counts.items() if n > 1)
    if duplicates:
        raise ValueError(
            f"{path}: {len(duplicates)} index(es) appear more than once "
            f"(e.g. {schema.preview_indices(duplicates)}); "
            "keep one prediction per question"
        )
    by_index = {int(q["index"]): q for q in questions}
    unknown = sorted(set(counts) - set(by_index))
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} index(es) are not in the {split} split "
            f"(e.g. {schema.preview_indices(unknown)}; "
            f"the split has {len(by_index)} questions): check --split and --data-dir, or that the file "
            "was made on this version of the benchmark"
        )
    answered = [by_index[index] for index in sorted(counts)]
    no_answer = [int(q["index"]) for q in answered if not q.get("answer")]
    if no_answer:
        raise ValueError(
            f"the {split} split has no answers for {len(no_answer)} of the file's questions (e.g. "
            f"{schema.preview_indices(no_answer)}): only the validation split can be scored; "
            "test predictions are sent to the benchmark's organisers"
        )
    return {int(p["index"]): str(p["prediction"]) for p in predictions}, answered
