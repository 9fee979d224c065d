"""Which data a run scored, and whether that is the official release.

A number is comparable with the leaderboard only when it was measured on the official files,
all of them. Every run and every scored file records a ``data`` object in ``results.json``:

- ``source``: ``"official"`` (downloaded from the Hub, md5-checked), ``"sample"`` (the bundled
  synthetic sample) or ``"local"`` (files in a ``--data-dir``);
- ``official``: true only when every file of the split is there and its md5 was found to be the
  official one (on download, by ``gmai-hf prepare --verify``, or remembered from an earlier check
  of the same unchanged file); the official byte sizes are not published, so no cheaper check
  can vouch for a file;
- ``questions``: the split's size before any selection; ``files``: name and bytes of each file;
- ``problems``: why the data is not official, in words a report can print.

:func:`fingerprint` (file names and sizes) is what a resumed run must share with the run that
wrote the answers: the same files in another folder resume, other data is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gmai_hf import SAMPLE_DIR, download, schema

SOURCES: tuple[str, ...] = ("official", "sample", "local")


def split_files(split: str, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """The files ``split`` is read from: those in ``data_dir``, or the Hub downloads in the cache."""
    if data_dir is None:
        return download.cached_split_files(split)
    from gmai_hf.builder import local_split_files

    return local_split_files(data_dir, split)


def source_of(data_dir: str | os.PathLike[str] | None) -> str:
    """``official`` (Hub download), ``sample`` (the bundled sample) or ``local``."""
    if data_dir is None:
        return "official"
    return "sample" if Path(data_dir).resolve() == SAMPLE_DIR.resolve() else "local"


def fingerprint(paths: list[Path]) -> list[list[Any]]:
    """``[[name, bytes], ...]``: what identifies the data for resuming (not the folder it is in)."""
    return [[path.name, path.stat().st_size] for path in paths]


def describe(split: str, data_dir: str | os.PathLike[str] | None, questions: int) -> dict[str, Any]:
    """The ``data`` object of ``results.json`` for ``split`` read from ``data_dir`` (None: the Hub)."""
    paths = split_files(split, data_dir)
    source = source_of(data_dir)
    verdicts = {path: download.recall(path) for path in paths}
    expected = len(download.official_names(split))
    problems = []
    if source == "sample":
        problems.append("the bundled synthetic sample (made-up questions), not the benchmark")
    else:
        if len(paths) < expected:
            problems.append(f"{len(paths)} of the {expected} official {split} files")
        if split == "validation" and questions != schema.VAL_QUESTIONS:
            problems.append(
                f"{questions} questions, the official validation split has {schema.VAL_QUESTIONS}"
            )
        differ = [path.name for path, verdict in verdicts.items() if verdict is False]
        unknown = [path.name for path, verdict in verdicts.items() if verdict is None]
        if differ:
            problems.append(f"not the official file(s) (md5 differs): {', '.join(differ)}")
        if unknown:
            where = f" --data-dir {data_dir}" if data_dir is not None else ""
            problems.append(
                f"not verified as the official file(s): {', '.join(unknown)} (run `gmai-hf prepare --verify "
                f"--split {split}{where}` once to check their md5)"
            )
    return {
        "source": source,
        "official": not problems,
        "split": split,
        "questions": questions,
        "files": [
            {"name": path.name, "bytes": path.stat().st_size, "md5_verified": verdicts[path] is True}
            for path in paths
        ],
        "problems": problems,
    }
