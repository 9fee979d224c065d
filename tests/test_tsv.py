"""The streaming TSV reader against the csv module on pandas-style (QUOTE_MINIMAL) output."""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

import pytest

from gmai_hf import tsv


def _write(path: Path, rows: list[list[str]], lineterminator: str = "\n") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter="\t", lineterminator=lineterminator).writerows(rows)
    return path


def _random_rows(rng: random.Random, n_rows: int, n_fields: int) -> list[list[str]]:
    alphabet = ['"', "\t", "\n", "a", "b", " ", "é", "x" * 40]
    return [
        [str(i)]
        + ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8))) for _ in range(n_fields - 1)]
        for i in range(n_rows)
    ]


def _decoded(records: list[tsv.Record]) -> list[list[str]]:
    return [[field.decode("utf-8") for field in record.fields] for record in records]


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, tsv.CHUNK_SIZE])
def test_matches_csv_module_on_random_quoting(tmp_path: Path, chunk_size: int) -> None:
    """Tabs, quotes and newlines inside fields, across read-chunk boundaries, parse like csv does."""
    rng = random.Random(chunk_size)
    rows = [["index", "f1", "f2", "f3"], *_random_rows(rng, 60, 4)]
    path = _write(tmp_path / "x.tsv", rows)
    header, start = tsv.read_header(path)
    assert header == rows[0]
    records = list(tsv.iter_records(path, 4, start, chunk_size=chunk_size))
    assert _decoded(records) == rows[1:]
    # Spans are exact: re-reading a record by offset gives the same fields.
    data = path.read_bytes()
    for record in records:
        assert tsv.parse_record(data[record.start : record.end]) == record.fields
    assert records[-1].end == len(data)


def test_crlf_line_ends(tmp_path: Path) -> None:
    rows = [["index", "q"], ["0", "a\tb"], ["1", 'say "hi"'], ["2", ""]]
    path = _write(tmp_path / "crlf.tsv", rows, lineterminator="\r\n")
    header, start = tsv.read_header(path)
    assert header == ["index", "q"]
    assert _decoded(list(tsv.iter_records(path, 2, start))) == rows[1:]


@pytest.mark.parametrize("parts", [2, 3, 5, 17])
def test_split_ranges_are_row_aligned(tmp_path: Path, parts: int) -> None:
    """Byte ranges cut only between records, even where newlines sit inside quoted fields."""
    rng = random.Random(parts)
    rows = [["index", "f1", "f2"], *_random_rows(rng, 80, 3)]
    path = _write(tmp_path / "x.tsv", rows)
    _, start = tsv.read_header(path)
    ranges = tsv.split_ranges(path, start, parts)
    assert 1 < len(ranges) <= parts
    assert ranges[0][0] == start and ranges[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    whole = list(tsv.iter_records(path, 3, start))
    pieces = [record for a, b in ranges for record in tsv.iter_records(path, 3, a, b)]
    assert pieces == whole
    assert {a for a, _ in ranges} <= {record.start for record in whole}


def test_split_ranges_single_part(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.tsv", [["index"], ["0"], ["1"]])
    assert tsv.split_ranges(path, 6, 1) == [(6, path.stat().st_size)]


def test_last_row_without_newline_is_kept_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_bytes(b"index\tq\n0\ta\n1\tb")
    assert _decoded(list(tsv.iter_records(path, 2, 8))) == [["0", "a"], ["1", "b"]]


@pytest.mark.parametrize(
    "tail",
    [b'3\t"cut inside quotes', b"3\tonly-two-of-three"],
    ids=["inside-quotes", "missing-fields"],
)
def test_truncated_file(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "cut.tsv"
    path.write_bytes(b"index\tq\tr\n1\ta\tb\n2\tc\td\n" + tail)
    with pytest.raises(tsv.TsvFormatError, match=r"truncated.*question index 3, line 4") as error:
        list(tsv.iter_records(path, 3, 10, index_field=0))
    assert str(path) in str(error.value)


def test_wrong_field_count_names_line_and_index(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"index\tq\n0\ta\n7\tb\textra\n")
    with pytest.raises(tsv.TsvFormatError, match=r"question index 7, line 3 \(byte 12\) has 3 fields"):
        list(tsv.iter_records(path, 2, 8, index_field=0))


def test_unquoted_quote_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(b'index\tq\n0\tsay "hi"\n')
    with pytest.raises(tsv.TsvFormatError, match=r"line 2.*holds a quote but is not quoted"):
        list(tsv.iter_records(path, 2, 8))


def test_text_after_closing_quote_is_an_error() -> None:
    with pytest.raises(ValueError, match="text after its closing quote"):
        tsv.split_quoted(b'0\t"ab"c')


def test_header_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    with pytest.raises(tsv.TsvFormatError, match="no header line"):
        tsv.read_header(empty)


def test_line_number(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_bytes(b"a\nbb\nccc\n")
    assert [tsv.line_number(path, offset) for offset in (0, 2, 5, 8)] == [1, 2, 3, 3]


def test_a_stray_quote_fails_fast_with_its_line_and_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    rows = [["index", "question", "image"]]
    rows += [[str(i), f"question {i}", "x" * 2000] for i in range(3000)]  # ~6 MB
    path = _write(tmp_path / "stray.tsv", rows)
    data = path.read_bytes()
    at = data.index(b"question 12\t")
    path.write_bytes(data[:at] + b'"' + data[at:])  # a quote opening a field that never closes
    _header, start = tsv.read_header(path)
    tracemalloc.start()
    with pytest.raises(tsv.TsvFormatError) as error:
        list(tsv.iter_records(path, 3, start, index_field=0, chunk_size=64 * 1024, max_record_bytes=1 << 20))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "question index 12, line 14" in str(error.value) and "quoted field opened at line 14" in str(
        error.value
    )
    assert "stray" in str(error.value)
    assert peak < 4 * (1 << 20), f"the reader held {peak:,} bytes for a 1 MB record bound"


def test_a_stray_quote_near_the_end_is_not_blamed_on_truncation_alone(tmp_path: Path) -> None:
    rows = [["index", "question"], ["0", "a"], ["1", "b"], ["2", "c"]]
    path = _write(tmp_path / "x.tsv", rows)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"1\tb", b'1\t"b'))
    _header, start = tsv.read_header(path)
    with pytest.raises(tsv.TsvFormatError, match=r"ends inside a quoted field opened at line 3 .*stray"):
        list(tsv.iter_records(path, 2, start))
