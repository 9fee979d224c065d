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
  run on the export knows whether it is the official release; and what it holds: each shard's
  name, bytes and sha256, and each split's content fingerprint
  (:func:`gmai_hf.fingerprints.split_fingerprint`), against which every read checks it.

The export is written into a temporary folder beside ``output_dir`` and moved into place when
whole, under a lock beside it (a second export into the same folder at once is refused). It
replaces only an earlier gmai-hf export: a non-empty folder holding anything else is refused,
naming what is there, so nothing the export did not write is overwritten or deleted.

No per-task or per-department configurations: the three views of the tree cross each other, so
files grouped by one view would split the others into fragments, while selecting a slice on
the metadata columns after loading takes milliseconds (``gmai_hf.tree.select``, ``ds.filter``).

:func:`push_to_hub` uploads such a folder with ``huggingface_hub``, sending only the files whose
content differs from the repository's (and deleting shards the new export no longer has).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmai_hf import fingerprints, identity, schema
from gmai_hf.files import atomic_output, write_atomic
from gmai_hf.fingerprints import CARD, DATA_DIR, PROVENANCE, is_export, read_provenance

logger = logging.getLogger(__name__)

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


def _write_split(
    ds: Any, shards: Sequence[Shard], sizes: Sequence[int], output: Path, schema_: Any
) -> dict[int, str]:
    """Write ``ds`` into ``shards`` (row groups of at most ``ROW_GROUP_ROWS``/``ROW_GROUP_BYTES``);
    returns every written question's content fingerprint (computed on the rows as written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    found: dict[int, str] = {}
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
            with atomic_output(output / shard.name) as tmp, pq.ParquetWriter(tmp, schema_) as writer:
                while row < shard.stop:
                    stop, group = row, 0
                    while stop < shard.stop and stop - row < ROW_GROUP_ROWS:
                        if group and group + sizes[stop] > ROW_GROUP_BYTES:
                            break
                        group += sizes[stop]
                        stop += 1
                    table = take(stop - row)
                    writer.write_table(table, row_group_size=stop - row)
                    found.update(fingerprints.table_fingerprints(table))
                    progress.update(stop - row)
                    row = stop
    return found


@contextlib.contextmanager
def export_lock(output: Path) -> Iterator[None]:
    """Hold the lock of exports into ``output``: a file beside it (the folder itself is replaced
    when the export moves into place), so a second export there at once is refused."""
    from gmai_hf.processes import OutputLock

    output.parent.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(output.parent, name=f".{output.name}.gmai-hf-export.lock", target=output)
    lock.acquire(what="export")
    try:
        yield
    finally:
        lock.release()


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
    split an earlier export into the same folder holds, and this one does not redo, is kept
    (checked against its record first). Raises ``OutputLocked`` while another export writes
    there, ``FileExistsError`` for a folder holding anything but an earlier export."""
    max_bytes = parse_size(max_shard_size)
    output = Path(os.path.abspath(output_dir))  # "." has a parent to write beside
    with export_lock(output):
        earlier = _earlier_export(output)
        work = Path(tempfile.mkdtemp(prefix=f".{output.name}.export-", dir=output.parent))
        try:
            names, provenance = _export_into(work, earlier, output, data_dir, splits, max_bytes, token)
            _move_into_place(work, output)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for entry in provenance["splits"].values():
        fingerprints.remember_shards(output, entry.get("shards") or [])
    return [output / name for name in names]


def _export_into(
    work: Path,
    earlier: dict[str, Any] | None,
    output: Path,
    data_dir: str | os.PathLike[str] | None,
    splits: Sequence[str],
    max_bytes: int,
    token: str | bool | None,
) -> tuple[list[str], dict[str, Any]]:
    """The export written into the empty folder ``work``: the names written and the provenance."""
    from gmai_hf.builder import FEATURES, load_split

    (work / DATA_DIR).mkdir()
    names: list[str] = []
    split_infos, provenance = _keep_earlier(
        output, earlier, [s for s in schema.SPLITS if s not in splits], work
    )
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
        content = _write_split(ds, shards, sizes, work, schema_)
        records = fingerprints.shard_records(work, [shard.name for shard in shards])
        names += [shard.name for shard in shards]
        size = sum(record["bytes"] for record in records)
        split_infos[split] = {"num_examples": len(ds), "num_bytes": size}
        provenance["splits"][split] = {
            **identity.describe(split, data_dir, len(ds)),
            "fingerprint": fingerprints.split_fingerprint(content),
            "shards": records,
        }
        logger.info("%s: %d questions in %d shard(s), %.1f MB", split, len(ds), len(shards), size / 1e6)
    if not any(split in split_infos for split in splits):
        raise FileNotFoundError(
            f"nothing to export: no split of GMAI-MMBench found in {data_dir or 'the Hub'}"
        )
    ordered = {split: split_infos[split] for split in schema.SPLITS if split in split_infos}
    provenance["splits"] = {split: provenance["splits"][split] for split in ordered}
    write_atomic(work / PROVENANCE, json.dumps(provenance, indent=2) + "\n")
    write_atomic(work / CARD, card(ordered, provenance))
    return [*names, PROVENANCE, CARD], provenance


_SHARD_NAME = re.compile(rf"{DATA_DIR}/({'|'.join(schema.SPLITS)})-\d{{5}}-of-\d{{5}}\.parquet")


def _earlier_export(output: Path) -> dict[str, Any] | None:
    """The provenance of the earlier export in ``output`` (None: no folder, or an empty one).
    Refuses (``FileExistsError``, naming what is there) a folder holding anything else: the
    export never overwrites or deletes files it did not write."""
    if not output.exists():
        return None
    if not output.is_dir():
        raise FileExistsError(f"--output-dir {output} is a file: give a folder (a new or empty one)")
    found = sorted(path.relative_to(output).as_posix() for path in output.rglob("*") if not path.is_dir())
    if not found and not any(output.iterdir()):
        return None
    provenance = read_provenance(output)
    if provenance is None or provenance.get("gmai_hf_export") is None:
        foreign = found
    else:
        recorded = {
            name for split in schema.SPLITS for name in fingerprints.recorded_shards(provenance, split) or {}
        }
        foreign = [
            name
            for name in found
            if name not in (CARD, PROVENANCE)
            and not (_SHARD_NAME.fullmatch(name) and (not recorded or name in recorded))
        ]
    if foreign or not found:
        shown = ", ".join(foreign[:5] or ["empty folders"]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise FileExistsError(
            f"--output-dir {output} is not empty and not an earlier gmai-hf export (it holds {shown}): "
            "export into a new or empty folder; files the export did not write are never replaced"
        )
    return provenance


def _keep_earlier(
    output: Path, earlier: dict[str, Any] | None, keep: Sequence[str], work: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The ``keep`` splits an earlier export left in ``output``, checked against its record and
    linked (or copied) into ``work``: their sizes for the card, and their provenance."""
    import yaml

    provenance: dict[str, Any] = {"gmai_hf_export": 1, "splits": {}}
    infos: dict[str, dict[str, Any]] = {}
    if earlier is None:
        return infos, provenance
    try:
        card_yaml = yaml.safe_load((output / CARD).read_text(encoding="utf-8").split("---")[1])
        sizes = {entry["name"]: entry for entry in card_yaml["dataset_info"]["splits"]}
    except (OSError, IndexError, KeyError, TypeError, yaml.YAMLError):
        sizes = {}
    for split in keep:
        shards = fingerprints.split_shards(output, split)
        if not (shards and split in sizes and split in (earlier.get("splits") or {})):
            continue
        try:
            fingerprints.check_export(output, split, earlier)
        except fingerprints.ExportMismatch as error:
            raise fingerprints.ExportMismatch(
                f"{error} (the {split} split of the earlier export would be kept: export it again too)"
            ) from None
        for name in shards:
            _link_or_copy(output / name, work / name)
        infos[split] = {key: sizes[split][key] for key in ("num_examples", "num_bytes")}
        provenance["splits"][split] = earlier["splits"][split]
    return infos, provenance


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _move_into_place(work: Path, output: Path) -> None:
    """Put the finished export ``work`` at ``output`` (new, empty, or an earlier export, replaced)."""
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp made it private
    if output.exists() and any(output.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
        os.replace(output, old / output.name)
        os.replace(work, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, output)


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


# --- Uploading ------------------------------------------------------------------------------------


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


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
            if known["sha256"] != fingerprints.file_sha256(path):
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
    without the Hub. Returns ``{"uploaded": [...], "deleted": [...]}``. An export whose shards
    are no longer those its ``gmai_hf.json`` records is refused before anything is sent.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    folder = Path(folder)
    if not is_export(folder):
        raise FileNotFoundError(
            f"{folder} is not an export (no README.md and data/*.parquet): run gmai-hf export first"
        )
    provenance = read_provenance(folder)
    for split in (provenance or {}).get("splits") or {}:
        fingerprints.check_export(folder, split, provenance)  # an edited export is not published
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
