"""The benchmark in the Hub's own form: Parquet shards and a dataset card, read with no code.

``datasets`` 4 and later run no loading scripts: on the Hub a dataset is Parquet files plus a
``README.md`` whose YAML declares its configurations and features. :func:`export` writes the
prepared splits that way, from the Arrow cache the builder made (so the TSVs are parsed once):

- ``data/{split}-{i:05d}-of-{n:05d}.parquet``, each under ``max_shard_size`` (a question larger
  than that gets a shard of its own), images stored as the original bytes in the
  ``datasets.Image`` struct, row groups of at most 100 questions or 64 MB (what the dataset
  viewer reads well), streamed batch by batch so memory stays bounded whatever the split's size;
- ``README.md``: YAML (``configs``: one default configuration with both splits;
  ``dataset_info`` features and split sizes; license, task categories, tags) and a card
  explaining the lexical tree, the columns and the provenance;
- ``gmai_hf.json``: which TSV files the export was made from (name, bytes, md5-verified), so a
  run on the export knows whether it is the official release.

No per-task or per-department configurations: the three views of the tree cross each other, so
files grouped by one view would split the others into fragments, while selecting a slice on
the metadata columns after loading takes milliseconds (``gmai_hf.tree.select``, ``ds.filter``).

:func:`push_to_hub` uploads such a folder with ``huggingface_hub``, sending only the files whose
content differs from the repository's (and deleting shards the new export no longer has).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmai_hf import identity, schema
from gmai_hf.files import atomic_output, write_atomic

logger = logging.getLogger(__name__)

DATA_DIR = "data"
CARD = "README.md"
PROVENANCE = "gmai_hf.json"
DEFAULT_MAX_SHARD_SIZE = "500MB"
#: Row groups hold at most this many questions and bytes (the viewer reads row groups whole).
ROW_GROUP_ROWS = 100
ROW_GROUP_BYTES = 64 * 1024 * 1024

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: str | int) -> int:
    """Bytes in ``"500MB"``, ``"1.5GiB"`` or an int (decimal units as the Hub counts, binary with i)."""
    if isinstance(size, int):
        return size
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", size, re.IGNORECASE)
    if found is None:
        raise ValueError(f"--max-shard-size {size!r}: give a size such as 500MB, 1GB or 256MiB")
    number, unit = found.groups()
    return int(float(number) * _UNITS[(unit or "").upper()])


def is_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder in the Parquet form (as :func:`export` writes it)."""
    folder = Path(path)
    return (folder / CARD).is_file() and any((folder / DATA_DIR).glob("*.parquet"))


def export_source(data_dir: str | os.PathLike[str] | None, dataset: str | None = None) -> str | None:
    """The export a command reads: ``dataset`` (a Hub repository or folder), or ``data_dir`` when it
    holds an export; None when the data are TSVs (in ``data_dir``, or from the Hub)."""
    if dataset is not None:
        return str(dataset)
    if data_dir is not None and is_export(data_dir):
        return str(data_dir)
    return None


@dataclass
class Shard:
    """One Parquet file of a split: rows ``[start, stop)`` of the prepared split."""

    split: str
    number: int
    of: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{DATA_DIR}/{self.split}-{self.number:05d}-of-{self.of:05d}.parquet"


def plan_shards(split: str, sizes: Sequence[int], max_bytes: int) -> list[Shard]:
    """Consecutive rows cut into shards of at most ``max_bytes`` (estimated: image bytes + text)."""
    bounds = [0]
    total = 0
    for row, size in enumerate(sizes):
        if total and total + size > max_bytes:
            bounds.append(row)
            total = 0
        total += size
    bounds.append(len(sizes))
    return [
        Shard(split, number, len(bounds) - 1, start, stop)
        for number, (start, stop) in enumerate(itertools.pairwise(bounds))
    ]


def _image_sizes(ds: Any) -> list[int]:
    """Per-row byte estimate of a prepared split: its image's bytes (read from the Arrow offsets
    alone, so nothing else of the memory-mapped cache is touched) plus room for the text."""
    import pyarrow.compute as pc

    column = ds.data.table.column("image")
    lengths = pc.binary_length(pc.struct_field(column, "bytes")).to_pylist()
    return [(length or 0) + 1024 for length in lengths]


def _batches(ds: Any) -> Iterator[Any]:
    """The prepared split's record batches, read from its cache files one at a time (not mapped:
    memory holds one batch, whatever the split's size)."""
    import pyarrow as pa

    for cache in ds.cache_files:
        with pa.OSFile(cache["filename"]) as source:
            yield from pa.ipc.open_stream(source)


def _write_split(ds: Any, shards: Sequence[Shard], sizes: Sequence[int], output: Path, schema_: Any) -> int:
    """Write ``ds`` into ``shards`` (row groups of at most ``ROW_GROUP_ROWS``/``ROW_GROUP_BYTES``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    total = 0
    batches = _batches(ds)
    current = None  # the batch being read, less the rows already written
    row = 0  # the next row to write

    def take(count: int) -> Any:
        nonlocal current
        pieces = []
        while count:
            if current is None or current.num_rows == 0:
                current = next(batches)
            piece = current.slice(0, count)
            pieces.append(piece)
            count -= piece.num_rows
            current = current.slice(piece.num_rows)
        return pa.Table.from_batches(pieces).cast(schema_)

    with tqdm(total=len(ds), unit="q", desc=f"export {shards[0].split}", dynamic_ncols=True) as progress:
        for shard in shards:
            path = output / shard.name
            with atomic_output(path) as tmp, pq.ParquetWriter(tmp, schema_) as writer:
                while row < shard.stop:
                    stop, group = row, 0
                    while stop < shard.stop and stop - row < ROW_GROUP_ROWS:
                        if group and group + sizes[stop] > ROW_GROUP_BYTES:
                            break
                        group += sizes[stop]
                        stop += 1
                    writer.write_table(take(stop - row), row_group_size=stop - row)
                    progress.update(stop - row)
                    row = stop
            total += path.stat().st_size
    return total


def export(
    output_dir: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    splits: Sequence[str] = schema.SPLITS,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    token: str | bool | None = None,
) -> list[Path]:
    """Write ``splits`` of the TSVs in ``data_dir`` (None: the official files from the Hub) as a
    Hub-ready Parquet folder; returns the files written. Splits without files are left out; a
    split an earlier export into the same folder holds, and this one does not redo, is kept."""

    from gmai_hf.builder import FEATURES, load_split

    max_bytes = parse_size(max_shard_size)
    output = Path(output_dir)
    (output / DATA_DIR).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    split_infos, provenance = _earlier(output, keep=[s for s in schema.SPLITS if s not in splits])
    schema_ = FEATURES.arrow_schema.with_metadata(
        {"huggingface": json.dumps({"info": {"features": FEATURES.to_dict()}})}
    )
    for split in splits:
        try:
            ds = load_split(split, data_dir, token=token)
        except (FileNotFoundError, PermissionError) as error:
            if len(splits) == 1:
                raise
            logger.warning("the %s split is left out of the export: %s", split, error)
            continue
        sizes = _image_sizes(ds)
        shards = plan_shards(split, sizes, max_bytes)
        current = {Path(shard.name).name for shard in shards}
        for stale in (output / DATA_DIR).glob(f"{split}-*.parquet"):  # an earlier export's shards
            if stale.name not in current:
                stale.unlink()
        size = _write_split(ds, shards, sizes, output, schema_)
        written += [output / shard.name for shard in shards]
        split_infos[split] = {"num_examples": len(ds), "num_bytes": size}
        provenance["splits"][split] = identity.describe(split, data_dir, len(ds))
        logger.info("%s: %d questions in %d shard(s), %.1f MB", split, len(ds), len(shards), size / 1e6)
    if not any(split in split_infos for split in splits):
        raise FileNotFoundError(
            f"nothing to export: no split of GMAI-MMBench found in {data_dir or 'the Hub'}"
        )
    ordered = {split: split_infos[split] for split in schema.SPLITS if split in split_infos}
    provenance["splits"] = {split: provenance["splits"][split] for split in ordered}
    written.append(write_atomic(output / PROVENANCE, json.dumps(provenance, indent=2) + "\n"))
    written.append(write_atomic(output / CARD, card(ordered, provenance)))
    return written


def _earlier(output: Path, keep: Sequence[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Split sizes and provenance of the ``keep`` splits an earlier export left in ``output``."""
    import yaml

    provenance: dict[str, Any] = {"gmai_hf_export": 1, "splits": {}}
    infos: dict[str, dict[str, Any]] = {}
    earlier = read_provenance(output) or {}
    try:
        card_yaml = yaml.safe_load((output / CARD).read_text(encoding="utf-8").split("---")[1])
        sizes = {entry["name"]: entry for entry in card_yaml["dataset_info"]["splits"]}
    except (OSError, IndexError, KeyError, TypeError, yaml.YAMLError):
        sizes = {}
    for split in keep:
        shards = list((output / DATA_DIR).glob(f"{split}-*.parquet"))
        if shards and split in sizes and split in (earlier.get("splits") or {}):
            infos[split] = {key: sizes[split][key] for key in ("num_examples", "num_bytes")}
            provenance["splits"][split] = earlier["splits"][split]
    return infos, provenance


def _size_category(questions: int) -> str:
    """The Hub's size bucket for ``questions`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if questions < limit:
            return name
    return "100K<n<1M"


def card(splits: dict[str, dict[str, Any]], provenance: dict[str, Any]) -> str:
    """The dataset card: YAML the Hub and ``datasets`` read, then the prose a person reads."""
    import yaml

    from gmai_hf.builder import FEATURES

    metadata = {
        "license": "apache-2.0",
        "language": ["en"],
        "pretty_name": "GMAI-MMBench",
        "tags": ["medical", "multimodal", "benchmark", "vision-language"],
        "task_categories": ["visual-question-answering", "multiple-choice"],
        "size_categories": [_size_category(sum(s["num_examples"] for s in splits.values()))],
        "configs": [
            {
                "config_name": "default",
                "default": True,
                "data_files": [{"split": split, "path": f"{DATA_DIR}/{split}-*.parquet"} for split in splits],
            }
        ],
        "dataset_info": {
            "features": FEATURES._to_yaml_list(),
            "splits": [{"name": split, **values} for split, values in splits.items()],
            "dataset_size": sum(values["num_bytes"] for values in splits.values()),
        },
    }
    sources = []
    for split, data in provenance["splits"].items():
        files = ", ".join(f"`{f['name']}` ({f['bytes']:,} bytes)" for f in data["files"])
        verdict = "the official release (md5-verified)" if data["official"] else "; ".join(data["problems"])
        sources.append(f"- `{split}`: {data['questions']:,} questions from {files}: {verdict}.")
    counts = ", ".join(f"{values['num_examples']:,} {split}" for split, values in splits.items())
    return (
        "---\n"
        + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
        + "---\n\n"
        + _BODY.format(counts=counts, sources="\n".join(sources), citation=schema.CITATION.strip())
    )


_BODY = """\
# GMAI-MMBench

A medical multimodal benchmark (NeurIPS 2024): multiple-choice questions (2 to 5 options), each
with one image, over 38 imaging modalities, 18 clinical VQA tasks, 18 departments and 4
perceptual granularities. This export holds {counts} questions, converted by gmai-hf
(`gmai-hf export`) from the benchmark's VLMEvalKit TSV files; images are the original PNG bytes,
nothing re-encoded. Test answers are hidden (null): test predictions go to the
organisers.

```python
import datasets

ds = datasets.load_dataset("path/or/repo", split="validation")      # no extra code needed
bone = ds.filter(lambda q: q["clinical_vqa_task"] == "Bone")       # a slice of the tree
ds[0]["image"]                                                      # a PIL image
```

## The lexical tree

Every question sits in three views of the benchmark's lexical tree, each going top-level value ->
`modality` -> `category` (the label):

- `clinical_vqa_task`: 18 tasks, e.g. Disease Diagnosis, Organ Recognition - Abdomen, Counting;
- `department`: 18 departments, e.g. Dermatology, Ophthalmology (null for some Attribute
  Recognition questions);
- `perceptual_granularity`: Box level, Contour level, Image level, Mask level.

The views cross each other, so the data is one table; select a slice by filtering these columns.

## Columns

| column | type | meaning |
|---|---|---|
| `index` | int64 | question id (global across the test parts) |
| `question` | string | question text |
| `A` .. `E` | string or null | option texts; null where the question has fewer options |
| `answer` | string or null | correct letter; null in test |
| `image` | image | the question's image (original bytes) |
| `category` | string | the label: text of the correct option |
| `clinical_vqa_task`, `department`, `perceptual_granularity`, `modality` | string | the tree |
| `original_task` | string | source dataset/task |

Strings such as `None` or `NA` in option cells are kept as text (VLMEvalKit's pandas reads them
as missing; gmai-hf's `--protocol vlmevalkit` does the same when evaluating).

## Provenance

{sources}

## Citation

```bibtex
{citation}
```

License: Apache 2.0 (as declared by the benchmark's dataset card).
"""


# --- Reading it back ------------------------------------------------------------------------------


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The export's record of its source files (None when absent or unreadable)."""
    try:
        return json.loads((Path(path) / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- Uploading ------------------------------------------------------------------------------------


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def upload_plan(
    folder: str | os.PathLike[str], remote: dict[str, dict[str, Any]]
) -> tuple[list[str], list[str]]:
    """Which files to upload (new or changed) and which remote shards to delete.

    ``remote``: path in the repository -> ``{"sha256": ...}`` (LFS files) or ``{"blob_id": ...}``.
    """
    folder = Path(folder)
    local = {
        str(path.relative_to(folder)): path
        for path in [folder / CARD, folder / PROVENANCE, *sorted((folder / DATA_DIR).glob("*.parquet"))]
        if path.is_file()
    }
    upload = []
    for name, path in local.items():
        known = remote.get(name)
        if known is None:
            upload.append(name)
        elif known.get("sha256"):
            if known["sha256"] != _sha256(path):
                upload.append(name)
        elif known.get("blob_id") != _git_blob_sha1(path):
            upload.append(name)
    delete = [
        name
        for name in remote
        if name.startswith(f"{DATA_DIR}/") and name.endswith(".parquet") and name not in local
    ]
    return upload, delete


def push_to_hub(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    api: Any = None,
) -> dict[str, list[str]]:
    """Upload an export to the dataset repository ``repo_id``: only files whose content changed.

    ``api`` (a ``huggingface_hub.HfApi``) is injectable so the exact operations can be checked
    without the Hub. Returns ``{"uploaded": [...], "deleted": [...]}``.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    folder = Path(folder)
    if not is_export(folder):
        raise FileNotFoundError(
            f"{folder} is not an export (no README.md and data/*.parquet): run gmai-hf export first"
        )
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    remote = {}
    for entry in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True, expand=True):
        if getattr(entry, "type", "file") == "directory" or not hasattr(entry, "blob_id"):
            continue
        lfs = getattr(entry, "lfs", None)
        remote[entry.path] = {
            "sha256": getattr(lfs, "sha256", None) if lfs else None,
            "blob_id": entry.blob_id,
        }
    upload, delete = upload_plan(folder, remote)
    if not upload and not delete:
        logger.info("%s is up to date: nothing to upload", repo_id)
        return {"uploaded": [], "deleted": []}
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in upload
    ]
    operations += [CommitOperationDelete(path_in_repo=name) for name in delete]
    api.create_commit(
        repo_id,
        operations=operations,
        repo_type="dataset",
        commit_message=f"gmai-hf export: {len(upload)} file(s) updated, {len(delete)} removed",
    )
    return {"uploaded": upload, "deleted": delete}
