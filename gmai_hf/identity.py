"""Which data a run scored, and whether that is the official release.

A number is comparable with the leaderboard only when it was measured on the official files,
all of them. Every run and every scored file records a ``data`` object in ``results.json``:

- ``source``: ``"official"`` (downloaded from the Hub, md5-checked), ``"sample"`` (the bundled
  synthetic sample, or an export of it), ``"local"`` (TSVs in a ``--data-dir``) or ``"export"``
  (a Parquet export made by ``gmai-hf export``, in a folder or on the Hub);
- ``official``: true only when every file of the split is there and its md5 was found to be the
  official one (on download, by ``gmai-hf prepare --verify``, or remembered from an earlier check
  of the same unchanged file; for an export, as its ``gmai_hf.json`` recorded when it was made,
  and only while its shards are still byte for byte those it records);
  the official byte sizes are not published, so no cheaper check can vouch for a file;
- ``questions``: the split's size before any selection; ``files``: name and bytes of each source
  TSV file;
- ``problems``: why the data is not official, in words a report can print.

:func:`fingerprint` (the source files' names and sizes) is what a resumed run must share with
the run that wrote the answers: the same files in another folder, or their Parquet export,
resume; other data is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gmai_hf import SAMPLE_DIR, download, fingerprints, schema

SYNTHETIC = "the bundled synthetic sample (made-up questions), not the benchmark"


def split_files(split: str, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """The TSV files ``split`` is read from: those in ``data_dir``, or the Hub downloads in the cache."""
    if data_dir is None:
        return download.cached_split_files(split)
    return fingerprints.local_split_files(data_dir, split)


def source_of(data_dir: str | os.PathLike[str] | None) -> str:
    """``official`` (Hub download), ``sample`` (the bundled sample) or ``local``."""
    if data_dir is None:
        return "official"
    return "sample" if Path(data_dir).resolve() == SAMPLE_DIR.resolve() else "local"


def _export_record(split: str, source: str, questions: int) -> dict[str, Any]:
    """The ``data`` object of a split read from a Parquet export: what its provenance says, vouched
    for only while its shards are those it records. An export of the synthetic sample stays
    ``source: "sample"`` (with ``export``: where it was read), so every report labels it."""
    provenance = read_provenance_of(source)
    made_from = ((provenance or {}).get("splits") or {}).get(split)
    if not isinstance(made_from, dict):
        return {
            "source": "export",
            "export": source,
            "official": False,
            "split": split,
            "questions": questions,
            "files": [],
            "problems": [
                f"{source} does not record which files it was made from (no {fingerprints.PROVENANCE})"
            ],
        }
    problems = list(made_from.get("problems") or [])
    if made_from.get("questions") != questions:
        problems.append(
            f"{questions} questions, the files it was made from held {made_from.get('questions')}"
        )
    if made_from.get("fingerprint") is None or fingerprints.recorded_shards(provenance, split) is None:
        problems.append(f"{source} was made by an older gmai-hf: its shards cannot be verified; export again")
    elif Path(source).is_dir():
        try:
            fingerprints.check_export(source, split, provenance)
        except fingerprints.ExportMismatch as error:
            problems.append(str(error))
    synthetic = made_from.get("source") == "sample"
    if synthetic and SYNTHETIC not in problems:
        problems.insert(0, SYNTHETIC)
    return {
        "source": "sample" if synthetic else "export",
        "export": source,
        "official": bool(made_from.get("official")) and not problems,
        "split": split,
        "questions": questions,
        "files": made_from.get("files") or [],
        "problems": problems,
        "made_from": made_from.get("source"),
        "fingerprint": made_from.get("fingerprint"),
    }


def read_provenance_of(source: str) -> dict[str, Any] | None:
    """An export's ``gmai_hf.json``, from its folder or its Hub repository (None when absent)."""
    if Path(source).is_dir():
        return fingerprints.read_provenance(source)
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(source, fingerprints.PROVENANCE, repo_type="dataset")
        return fingerprints.read_provenance(Path(path).parent)
    except Exception:  # no such file, no connection: the export is then simply not vouched for
        return None


def describe(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    questions: int,
    dataset: str | None = None,
) -> dict[str, Any]:
    """The ``data`` object of ``results.json`` for ``split`` read from ``data_dir`` (None: the Hub)
    or from the Parquet export ``dataset`` (a folder or a Hub repository)."""
    exported = fingerprints.export_source(data_dir, dataset)
    if exported is not None:
        return _export_record(split, exported, questions)
    paths = split_files(split, data_dir)
    source = source_of(data_dir)
    verdicts = {path: download.recall(path) for path in paths}
    expected = len(download.official_names(split))
    problems = []
    if source == "sample":
        problems.append(SYNTHETIC)
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


def fingerprint(data: dict[str, Any]) -> list[list[Any]]:
    """``[[name, bytes], ...]`` of a ``data`` object's source files: what identifies the data for
    resuming (not the folder it is in, nor whether it was read as TSV or as its Parquet export).
    An export that does not record its source files is identified by where it is."""
    files = [[file["name"], file["bytes"]] for file in data.get("files") or []]
    return files or [["export", data.get("export")]]
