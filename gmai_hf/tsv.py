"""Streaming, bounded-memory reader for the benchmark's TSVs (pandas ``to_csv(sep="\\t")`` output).

The files hold multi-MB base64 fields, so pandas needs about 3x the file in RAM. This reader works
on bytes, one record at a time, and keeps at most one read chunk plus one record in memory.
Lines without a quote take a fast path (split on tab); only records holding a quote are parsed
with pandas' QUOTE_MINIMAL rules (quoted fields may hold tabs, doubled quotes and newlines).

In QUOTE_MINIMAL output a quote appears only inside quoted fields, so the parity of the number of
quotes since the first data row tells whether a byte is inside quotes: that is how a record's end
is found and how a file is cut into row-aligned byte ranges for parallel preparation.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

#: Bytes read per system call; a record longer than this spans several reads.
CHUNK_SIZE = 16 * 1024 * 1024

#: The longest record the reader accepts. The real files' largest field (a base64 PNG) is a few
#: MB; a record past this bound is a stray quote that swallowed the rest of the file, and failing
#: there keeps memory bounded on bad input as on good input.
MAX_RECORD_BYTES = 256 * 1024 * 1024

_QUOTE = b'"'
_TAB = b"\t"
_NL = b"\n"


class TsvFormatError(ValueError):
    """A file that is not a well-formed TSV; the message names the file and the row."""


class Record(NamedTuple):
    """One data row: where it lies in the file (``start`` inclusive, ``end`` exclusive) and its fields."""

    start: int
    end: int
    fields: list[bytes]


def line_number(path: str | os.PathLike[str], offset: int) -> int:
    """1-based physical line holding byte ``offset`` (for error messages only: it reads the prefix)."""
    count = 0
    with open(path, "rb") as handle:
        remaining = offset
        while remaining > 0:
            chunk = handle.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            count += chunk.count(_NL)
            remaining -= len(chunk)
    return count + 1


def where(path: str | os.PathLike[str], offset: int) -> str:
    """``"line L (byte B)"``: a location a user can open in an editor or with ``tail -c``."""
    return f"line {line_number(path, offset)} (byte {offset})"


def read_header(path: str | os.PathLike[str]) -> tuple[list[str], int]:
    """The column names of ``path`` and the byte offset of its first data row."""
    with open(path, "rb") as handle:
        line = handle.readline(1024 * 1024)
    if not line.endswith(_NL):
        raise TsvFormatError(
            f"{path}: no header line (the file is empty, truncated, or not a TSV); "
            "re-download or regenerate it"
        )
    end = len(line)
    text = line.rstrip(b"\r\n")
    if _QUOTE in text:
        raise TsvFormatError(f"{path}: quoted header names are not supported: {text[:200]!r}")
    try:
        return [name.decode("utf-8") for name in text.split(_TAB)], end
    except UnicodeDecodeError as error:
        raise TsvFormatError(
            f"{path}: line 1: the header is not UTF-8 text ({error}); is this a GMAI-MMBench TSV? "
            "Re-download it or save it as UTF-8"
        ) from None


def _count_quotes(buf: bytes, start: int, end: int) -> int:
    # find() is memchr-fast (~10 GB/s) while count() runs at ~1.3 GB/s, and quotes are sparse
    # (a few per question, none in the MB-long base64 fields): hop from quote to quote, and only
    # fall back to count() where they are dense.
    found = 0
    position = buf.find(_QUOTE, start, end)
    while position >= 0:
        found += 1
        if found == 64:
            return found + buf.count(_QUOTE, position + 1, end)
        position = buf.find(_QUOTE, position + 1, end)
    return found


def split_quoted(record: bytes) -> list[bytes]:
    """Fields of a record that holds quotes, unquoted as pandas' QUOTE_MINIMAL writer quoted them.

    Raises ``ValueError`` (without location; callers add it) for a malformed quoted field.
    """
    pieces = record.split(_TAB)
    fields: list[bytes] = []
    i = 0
    while i < len(pieces):
        piece = pieces[i]
        if not piece.startswith(_QUOTE):
            if _QUOTE in piece:
                raise ValueError(f"field {len(fields) + 1} holds a quote but is not quoted: {piece[:80]!r}")
            fields.append(piece)
            i += 1
            continue
        parts = [piece]
        quotes = piece.count(_QUOTE)
        while quotes % 2:  # the field's closing quote is not reached yet: the tab was inside it
            i += 1
            if i == len(pieces):
                raise ValueError(f"quoted field {len(fields) + 1} is not closed")
            parts.append(pieces[i])
            quotes += pieces[i].count(_QUOTE)
        field = _TAB.join(parts)
        if len(field) < 2 or not field.endswith(_QUOTE):
            raise ValueError(
                f"quoted field {len(fields) + 1} has text after its closing quote: {field[:80]!r}"
            )
        fields.append(field[1:-1].replace(b'""', _QUOTE))
        i += 1
    return fields


def _split(buf: bytes | bytearray, start: int, stop: int, has_quote: bool) -> list[bytes]:
    if stop > start and buf[stop - 1] == 13:  # tolerate CRLF line ends (pandas on Windows)
        stop -= 1
    with memoryview(buf) as view:  # one copy of the record, as bytes
        record = bytes(view[start:stop])
    return split_quoted(record) if has_quote else record.split(_TAB)


def iter_records(
    path: str | os.PathLike[str],
    n_fields: int,
    start: int,
    end: int | None = None,
    *,
    index_field: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> Iterator[Record]:
    """Records whose first byte lies in ``[start, end)``; ``start`` must be a row start.

    Every record is checked to have ``n_fields`` fields. A last record without its newline is
    yielded when complete (field count right) and reported as a truncated file otherwise.
    ``index_field`` (a column position) lets errors name the question's index. A record longer
    than ``max_record_bytes`` is an error naming the line where its unclosed quote opened.
    """
    path = Path(path)
    limit = os.path.getsize(path) if end is None else end
    with path.open("rb") as handle:
        handle.seek(start)
        # A bytearray grows in place (and drops consumed bytes from its front in O(1)), so a
        # record spanning many reads is held once, not copied at every read.
        buf = bytearray()
        base = start  # file offset of buf[0]
        pos = 0  # record start within buf
        scan = 0  # where the search for the record's newline continues
        quotes = 0  # quotes in buf[pos:scan]
        eof = False
        while base + pos < limit or (pos < len(buf) and eof):
            newline = buf.find(_NL, scan)
            if newline < 0:
                if eof:
                    if pos == len(buf):
                        return
                    yield _last_record(path, buf, base, pos, quotes, scan, n_fields, index_field)
                    return
                quotes += _count_quotes(buf, scan, len(buf))
                if len(buf) - pos > max_record_bytes:
                    raise TsvFormatError(_unclosed_quote(path, buf, base, pos, index_field, max_record_bytes))
                # Read on past ``end`` only to finish the record that started before it.
                del buf[:pos]
                base += pos
                scan = len(buf)
                pos = 0
                chunk = handle.read(chunk_size)
                eof = not chunk
                buf += chunk
                continue
            quotes += _count_quotes(buf, scan, newline)
            if quotes % 2:  # the newline is inside a quoted field
                scan = newline + 1
                continue
            record_start = base + pos
            try:
                fields = _split(buf, pos, newline, quotes > 0)
            except ValueError as error:
                raise TsvFormatError(
                    f"{path}: {_describe(path, buf[pos:newline], record_start, index_field)}: {error}; "
                    "the file is not valid pandas-style TSV: re-download or regenerate it"
                ) from None
            if len(fields) != n_fields:
                raise TsvFormatError(
                    f"{path}: {_describe(path, buf[pos:newline], record_start, index_field)} has "
                    f"{len(fields)} fields, the header has {n_fields}; the file is corrupt or was edited: "
                    "re-download or regenerate it"
                )
            yield Record(record_start, base + newline + 1, fields)
            pos = scan = newline + 1
            quotes = 0


def _describe(path: Path, head: bytes | bytearray, offset: int, index_field: int | None) -> str:
    """``"question index 12, line 14 (byte 2048)"``, the index only when it can be read."""
    location = where(path, offset)
    if index_field is not None:
        value = bytes(head[:4096]).split(_TAB)[index_field : index_field + 1]
        if value and value[0].strip().isdigit():
            return f"question index {int(value[0])}, {location}"
    return f"row at {location}"


def _opening_quote(buf: bytes | bytearray, pos: int) -> int:
    """Position in ``buf`` of the quote that opened the field still open at the end of ``buf[pos:]``."""
    opened, inside = pos, False
    position = buf.find(_QUOTE, pos)
    while position >= 0:
        inside = not inside
        if inside:
            opened = position
        position = buf.find(_QUOTE, position + 1)
    return opened


def _unclosed_quote(
    path: Path, buf: bytearray, base: int, pos: int, index_field: int | None, limit: int
) -> str:
    opened = base + _opening_quote(buf, pos)
    return (
        f"{path}: {_describe(path, buf[pos : pos + 4096], base + pos, index_field)}: a quoted field opened "
        f"at {where(path, opened)} is still open {len(buf) - pos:,} bytes later (more than the "
        f"{limit:,} a record may hold): the file has a stray '\"' there (in pandas-style TSV a quote may "
        "only open a field or be doubled inside one). Fix that line, or re-download or regenerate the file"
    )


def _last_record(
    path: Path,
    buf: bytearray,
    base: int,
    pos: int,
    quotes: int,
    scan: int,
    n_fields: int,
    index_field: int | None,
) -> Record:
    """The final record of a file that does not end in a newline: complete, or a truncated file.

    ``quotes`` is the number of quotes in ``buf[pos:scan]``.
    """
    offset = base + pos
    problem = None
    if (quotes + _count_quotes(buf, scan, len(buf))) % 2:
        problem = (
            f"ends inside a quoted field opened at {where(path, base + _opening_quote(buf, pos))} (if the "
            "file is complete, that line holds a stray '\"')"
        )
    else:
        try:
            fields = _split(buf, pos, len(buf), _QUOTE in buf[pos:])
        except ValueError as error:
            problem = str(error)
        else:
            if len(fields) == n_fields:
                return Record(offset, base + len(buf), fields)
            problem = f"has {len(fields)} of the header's {n_fields} fields"
    raise TsvFormatError(
        f"{path}: the file is truncated: the last row ({_describe(path, buf[pos:], offset, index_field)}) "
        f"{problem} and the file does not end with a newline; re-download the file "
        "(or regenerate it) and try again"
    )


def split_ranges(path: str | os.PathLike[str], start: int, parts: int) -> list[tuple[int, int]]:
    """Cut ``path`` from ``start`` (a row start) into at most ``parts`` row-aligned byte ranges.

    One sequential pass counts quotes up to each cut (memory speed) so that a cut never falls
    inside a quoted field; ranges that would be empty are dropped.
    """
    size = os.path.getsize(path)
    if parts <= 1 or size - start < 2:
        return [(start, size)]
    targets = [start + (size - start) * k // parts for k in range(1, parts)]
    cuts = [start]
    with open(path, "rb") as handle:
        handle.seek(start)
        pos, quotes = start, 0  # quotes = number of quotes in [start, pos)
        for target in targets:
            if target <= cuts[-1]:
                continue
            while pos < target:  # count quotes up to the nominal cut
                chunk = handle.read(min(CHUNK_SIZE, target - pos))
                if not chunk:
                    break
                quotes += _count_quotes(chunk, 0, len(chunk))
                pos += len(chunk)
            cut = None
            while cut is None:  # then the first newline outside quotes at or after it
                chunk = handle.read(CHUNK_SIZE)
                if not chunk:
                    break
                scan = 0
                while True:
                    newline = chunk.find(_NL, scan)
                    if newline < 0:
                        quotes += _count_quotes(chunk, scan, len(chunk))
                        pos += len(chunk)
                        break
                    quotes += _count_quotes(chunk, scan, newline)
                    scan = newline + 1
                    if quotes % 2 == 0:
                        cut = pos + scan
                        quotes += _count_quotes(chunk, scan, len(chunk))
                        pos += len(chunk)
                        break
            if cut is None or cut >= size:
                break
            cuts.append(cut)
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def parse_record(data: bytes) -> list[bytes]:
    """Fields of one record read on its own (e.g. re-read by offset), trailing newline included or not."""
    if data.endswith(_NL):
        data = data[:-1]
    return _split(data, 0, len(data), _QUOTE in data)
