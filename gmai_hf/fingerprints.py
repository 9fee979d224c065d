"""What identifies data: the files a split is read from, hashes of files and of questions, and
the check of a Parquet export against the record it was written with.

Upstream of the builder and the export (it imports neither), so the builder can verify an
export before reading it, the export can record what it wrote, and :mod:`gmai_hf.identity`
can say which data a run scored, without any of them importing another in a circle.

- :func:`question_fingerprint`: sha256 of one question's content (index, question, options A-E,
  answer, image bytes); a run keeps it in every prediction record, so ``gmai-hf compare`` can
  tell two runs whose questions share indices but not their content.
- :func:`split_fingerprint`: sha256 over every question's fingerprint in index order: what an
  export records per split and what its rows are checked against after loading.
- :func:`file_sha256`: a file's sha256, remembered by path, size and mtime (like the TSV md5s).
- :func:`check_export`: an export's shards are exactly those its ``gmai_hf.json`` records, byte
  for byte (sha256); an edited, swapped, missing or extra shard is one error naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from gmai_hf import download, schema
from gmai_hf.files import VerdictMemory

logger = logging.getLogger(__name__)

#: An export's layout (written by :mod:`gmai_hf.export`).
DATA_DIR = "data"
CARD = "README.md"
PROVENANCE = "gmai_hf.json"

_SHA256 = VerdictMemory("sha256.json")
_LOADED = VerdictMemory("loaded.json")
_CHUNK = 8 * 1024 * 1024


class ExportMismatch(ValueError):
    """An export's files are not those its ``gmai_hf.json`` records (the message names the file)."""


# --- Which files ---------------------------------------------------------------------------------


def find_split_files(
    data_dir: Path, split: str
) -> tuple[list[Path], list[int], list[tuple[list[str], Path]]]:
    """The files of ``split`` present in ``data_dir`` (in order), the parts missing, and the parts
    found under two names: the lookup alone, without a word (cache keys call it often)."""
    found, missing, doubled = [], [], []
    for part, names in enumerate(download.official_names(split), start=1):
        present = [data_dir / name for name in names if (data_dir / name).is_file()]
        if present:
            found.append(present[0])
            if len(present) > 1:
                doubled.append((names, present[0]))
        else:
            missing.append(part)
    return found, missing, doubled


def local_split_files(data_dir: str | os.PathLike[str], split: str) -> list[Path]:
    """The files of ``split`` present in ``data_dir``, in order; warns which test parts are missing."""
    data_dir = Path(data_dir)
    found, missing, doubled = find_split_files(data_dir, split)
    for names, read in doubled:
        logger.warning("%s: both %s exist; reading %s", data_dir, names, read.name)
    if split == "test" and found and missing:
        logger.warning(
            "%s: test parts %s of %d are missing; loading the %d present",
            data_dir,
            missing,
            schema.TEST_PARTS,
            len(found),
        )
    return found


def is_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder in the Parquet form (as ``gmai-hf export`` writes it)."""
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


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """An export folder's record of what it was made from and what it holds (None: absent or unreadable)."""
    try:
        provenance = json.loads((Path(path) / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return provenance if isinstance(provenance, dict) else None


def split_shards(folder: Path, split: str) -> list[str]:
    """The shard names of ``split`` in an export folder (``data/{split}-*.parquet``), sorted."""
    return sorted(f"{DATA_DIR}/{path.name}" for path in (folder / DATA_DIR).glob(f"{split}-*.parquet"))


# --- Hashes --------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """:func:`sha256_file`, remembered by path, size and mtime: computed again only for a changed file."""
    entry = _SHA256.recall(path)
    if entry is not None and isinstance(entry.get("sha256"), str):
        return str(entry["sha256"])
    digest = sha256_file(path)
    _SHA256.remember(path, sha256=digest)
    return digest


def folder_identity(folder: Path) -> str:
    """A hash of an export folder's content (its card and every shard, by sha256): the key of its
    ``datasets`` cache, which by itself would serve the rows of an edited shard again."""
    digest = hashlib.sha256()
    for path in [folder / CARD, *sorted((folder / DATA_DIR).glob("*.parquet"))]:
        if path.is_file():
            digest.update(f"{path.relative_to(folder).as_posix()}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


def _image_bytes(image: Any) -> bytes:
    """The bytes of an ``image`` value: raw bytes, or the ``datasets.Image`` struct's ``bytes``."""
    if isinstance(image, Mapping):
        image = image.get("bytes")
    return bytes(image or b"")


def question_fingerprint(row: Mapping[str, Any]) -> str:
    """sha256 of what a question is: its index, text, options A-E, answer and image bytes."""
    text = [int(row["index"]), row.get("question"), *(row.get(x) for x in schema.OPTION_LETTERS)]
    digest = hashlib.sha256(json.dumps([*text, row.get("answer")], ensure_ascii=False).encode("utf-8"))
    digest.update(b"\0")
    digest.update(hashlib.sha256(_image_bytes(row.get("image"))).digest())
    return digest.hexdigest()


def split_fingerprint(fingerprints: Mapping[int, str]) -> str:
    """sha256 over every question's fingerprint in index order (``fingerprints``: index -> hex)."""
    digest = hashlib.sha256()
    for index in sorted(fingerprints):
        digest.update(f"{index}:{fingerprints[index]}\n".encode())
    return digest.hexdigest()


def table_fingerprints(table: Any) -> dict[int, str]:
    """index -> :func:`question_fingerprint` of every row of a ``pyarrow`` table of the features."""
    columns = ["index", "question", *schema.OPTION_LETTERS, "answer", "image"]
    present = [name for name in columns if name in table.column_names]
    return {int(row["index"]): question_fingerprint(row) for row in table.select(present).to_pylist()}


def dataset_fingerprints(ds: Any, batch_rows: int = 64) -> dict[int, str]:
    """index -> :func:`question_fingerprint` of every row of a ``datasets.Dataset`` (its selection
    respected), read in small Arrow batches so memory holds a few images at a time."""
    found: dict[int, str] = {}
    for batch in _arrow_batches(ds, batch_rows):
        found.update(table_fingerprints(batch))
    return found


def _arrow_batches(ds: Any, batch_rows: int) -> Iterator[Any]:
    yield from ds.with_format("arrow").iter(batch_size=batch_rows)


def loaded_fingerprint(ds: Any) -> str:
    """:func:`split_fingerprint` of a loaded split, remembered per ``datasets`` cache file (by
    path, size and mtime): a split is hashed once per cache, and a cache rebuilt is hashed again."""
    files = [Path(cache["filename"]) for cache in ds.cache_files]
    known = {str((_LOADED.recall(path) or {}).get("fingerprint")) for path in files}
    if files and len(known) == 1 and "None" not in known:
        return known.pop()
    found = split_fingerprint(dataset_fingerprints(ds))
    for path in files:
        _LOADED.remember(path, fingerprint=found, rows=len(ds))
    return found


# --- An export against its record ------------------------------------------------------------------


def recorded_shards(provenance: Mapping[str, Any] | None, split: str) -> dict[str, dict[str, Any]] | None:
    """name -> ``{"bytes", "sha256"}`` of the shards ``gmai_hf.json`` records for ``split`` (None:
    no such record, the export predates it or was not made by gmai-hf)."""
    entry = ((provenance or {}).get("splits") or {}).get(split)
    shards = entry.get("shards") if isinstance(entry, dict) else None
    if not isinstance(shards, list):
        return None
    return {str(shard.get("name")): shard for shard in shards if isinstance(shard, dict)}


def check_export(folder: str | os.PathLike[str], split: str, provenance: Mapping[str, Any] | None) -> bool:
    """Whether the ``split`` shards of the export ``folder`` could be checked against
    ``provenance``; raises :class:`ExportMismatch` naming the first shard that is missing,
    extra, or not byte for byte what was written. False: nothing to check against."""
    folder = Path(folder)
    present = split_shards(folder, split)
    if provenance is None:
        return False
    recorded = recorded_shards(provenance, split)
    if recorded is None:
        if split in (provenance.get("splits") or {}) or not present:
            return False
        raise ExportMismatch(
            f"{folder / present[0]}: {PROVENANCE} records no {split} split, yet this shard is there: "
            "remove it or export again"
        )
    missing = [name for name in recorded if name not in present]
    if missing:
        raise ExportMismatch(
            f"{folder / missing[0]}: missing ({len(missing)} of the {len(recorded)} {split} shards "
            f"{PROVENANCE} records are gone): restore it or export again"
        )
    extra = [name for name in present if name not in recorded]
    if extra:
        raise ExportMismatch(
            f"{folder / extra[0]}: not one of the {len(recorded)} {split} shards {PROVENANCE} records "
            "(a file added after the export): remove it or export again"
        )
    for name, shard in recorded.items():
        path = folder / name
        if path.stat().st_size != shard.get("bytes") or file_sha256(path) != shard.get("sha256"):
            raise ExportMismatch(
                f"{path}: not the shard that was exported (its size or sha256 differs from {PROVENANCE}: "
                "edited, or replaced by another file): export again"
            )
    return True


def shard_records(folder: Path, names: Iterable[str]) -> list[dict[str, Any]]:
    """``{"name", "bytes", "sha256"}`` of each written shard: what ``gmai_hf.json`` records."""
    return [
        {"name": name, "bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
        for name in names
    ]


def remember_shards(folder: Path, shards: Iterable[Mapping[str, Any]]) -> None:
    """Remember the sha256s just computed for shards now in their final place (no second hash)."""
    for shard in shards:
        _SHA256.remember(folder / str(shard["name"]), sha256=shard["sha256"])


# --- Models ------------------------------------------------------------------------------------------

#: Weight files: fingerprinted by name, size and the sha256 of their first and last MiB (hashing
#: tens of GB at every start would cost minutes); every other file of a model folder (config,
#: tokenizer, processor, chat template) is hashed whole.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")
_MIB = 1024 * 1024


def model_folder_fingerprint(folder: str | os.PathLike[str]) -> str:
    """sha256 over a model folder's files: what makes "the same model" for resuming a run.

    Weights replaced at the same path change it (their size, header or last tensor bytes); hidden
    entries (``.cache``, ``.git``) are skipped.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in name.split("/")):
            continue
        size = path.stat().st_size
        digest.update(f"{name}\0{size}\0".encode())
        with path.open("rb") as handle:
            if path.suffix in WEIGHT_SUFFIXES and size > 2 * _MIB:
                digest.update(handle.read(_MIB))
                handle.seek(-_MIB, os.SEEK_END)
                digest.update(handle.read(_MIB))
            else:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
    return digest.hexdigest()


def hub_model_commit(model_id: str) -> str | None:
    """The commit of a Hub model that loading it will use: the Hub's newest when it can be asked,
    else the one in the local cache (offline); None when neither is known."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        try:
            return model_info(model_id, timeout=5).sha
        except Exception as error:  # no connection, a gated or private model: fall back to the cache
            logger.debug("cannot ask the Hub for %s's commit: %s", model_id, error)
    cached = try_to_load_from_cache(model_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None
