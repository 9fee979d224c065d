"""The ``gmai_mmbench`` dataset builder: official TSVs -> Arrow cache -> ``datasets.Dataset``.

The single source of truth for reading the benchmark: ``import gmai_hf`` registers it under the
name ``gmai_mmbench`` (``datasets`` >= 4 runs no loading scripts), and the loading-script form in
``loading_script/gmai_mmbench/`` (``datasets`` 3.x) subclasses it. Works with ``datasets`` >= 3.0;
every difference between versions is in :mod:`gmai_hf.compat`. Files are streamed record by record
(:mod:`gmai_hf.tsv`) and written as Arrow tables flushed by size, so memory stays bounded
whatever the file size; images are kept as the original bytes and decoded lazily by
``datasets.Image``.
"""

from __future__ import annotations

import binascii
import functools
import glob
import hashlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets.exceptions import DatasetGenerationError

from gmai_hf import compat, download, fingerprints, identity, schema, tsv
from gmai_hf.fingerprints import find_split_files, local_split_files

logger = logging.getLogger(__name__)

DATASET_NAME = "gmai_mmbench"

FEATURES = datasets.Features(
    {
        "index": datasets.Value("int64"),
        "question": datasets.Value("string"),
        **{letter: datasets.Value("string") for letter in schema.OPTION_LETTERS},
        "answer": datasets.Value("string"),
        "image": datasets.Image(),
        **{name: datasets.Value("string") for name in schema.TREE_COLUMNS},
    }
)
assert tuple(FEATURES) == schema.FEATURE_NAMES

#: Columns a file must have (``answer`` is absent from test files).
REQUIRED_COLUMNS: tuple[str, ...] = tuple(name for name in schema.FEATURE_NAMES if name != "answer")

_PNG_END = b"IEND\xaeB`\x82"


class GmaiMMBenchError(DatasetGenerationError, ValueError):
    """Bad input files; the message names the file, the question (index or line) and what to do.

    A ``DatasetGenerationError`` so ``datasets`` passes it through unwrapped: the last line of the
    traceback is then the useful one.
    """


# --- Locating the files ---------------------------------------------------------------------------


def missing_split_message(data_dir: str | os.PathLike[str], split: str) -> str:
    """What was looked for when ``split`` has no file in ``data_dir``."""
    names = [name for names in download.official_names(split) for name in names]
    shown = names if len(names) <= 4 else [*names[:2], "...", *names[-2:]]
    return (
        f"no {split} file in {data_dir}: looked for {', '.join(shown)}. Put the official files there "
        "(or pass another data_dir), or leave data_dir out to download them from the Hub"
    )


def files_signature(data_dir: str | os.PathLike[str], splits: Sequence[str] = schema.SPLITS) -> str:
    """A cheap fingerprint of the files ``splits`` are read from (resolved paths, sizes, mtimes), so
    regenerated files get a new cache and one file reached by two spellings of a path shares one."""
    digest = hashlib.md5(usedforsecurity=False)
    for split in splits:
        for path in find_split_files(Path(data_dir), split)[0]:
            stat = path.stat()
            digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


# --- Reading rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Where each feature's column is in one file (read by name from its header)."""

    path: Path
    n_fields: int
    data_start: int
    positions: dict[str, int]

    @classmethod
    def read(cls, path: Path) -> _Layout:
        try:
            header, data_start = tsv.read_header(path)
        except tsv.TsvFormatError as error:
            raise GmaiMMBenchError(str(error)) from None
        by_name = {official: feature for official, feature in schema.OFFICIAL_TO_FEATURE.items()}
        by_name.update({vlmevalkit: feature for feature, vlmevalkit in schema.VLMEVALKIT_NAME.items()})
        positions: dict[str, int] = {}
        for position, name in enumerate(header):
            feature = by_name.get(name)
            if feature is None:
                logger.debug("%s: ignoring column %r", path, name)
                continue
            if feature in positions:
                raise GmaiMMBenchError(
                    f"{path}: column {name!r} appears twice in the header (as {header[positions[feature]]!r} "
                    "too); fix the header"
                )
            positions[feature] = position
        missing = [schema.FEATURE_TO_OFFICIAL[f] for f in REQUIRED_COLUMNS if f not in positions]
        if missing:
            raise GmaiMMBenchError(
                f"{path}: missing required column(s) {missing}; the header is {header}. Is this a "
                "GMAI-MMBench TSV? Re-download it or fix the header"
            )
        return cls(path, len(header), data_start, positions)


def decode_image(field: bytes, path: Path, index: int) -> bytes:
    """The image bytes of a base64 ``image`` field, checked to be a whole image (not a full decode)."""
    try:
        data = binascii.a2b_base64(field, strict_mode=True)
    except binascii.Error as error:
        raise GmaiMMBenchError(
            f"{path}: question index {index}: the image field is not valid base64 ({error}); "
            "the file is corrupt: re-download or regenerate it"
        ) from None
    kind = schema.image_kind(data)
    if kind is None:
        raise GmaiMMBenchError(
            f"{path}: question index {index}: the image field decodes to {len(data)} bytes that are not an "
            f"image (they start with {data[:8]!r}); the file is corrupt: re-download or regenerate it"
        )
    if kind == "PNG" and not data.endswith(_PNG_END):
        raise GmaiMMBenchError(
            f"{path}: question index {index}: the PNG image is cut short (no IEND chunk); the file is "
            "corrupt or truncated: re-download or regenerate it"
        )
    return data


class _ImageResolver:
    """Resolves image references (an ``image`` field holding another row's ``index``).

    Memory stays bounded: only row offsets are remembered, and the referenced row is re-read from
    the file. A reference to a row outside this byte range triggers one scan of the whole file.
    """

    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
        self.spans: dict[int, tuple[int, int]] = {}
        self._file_spans: dict[int, tuple[int, int]] | None = None
        self._handle: Any = None

    def remember(self, index: int, start: int, end: int) -> None:
        self.spans[index] = (start, end)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def _whole_file_spans(self, index: int) -> dict[int, tuple[int, int]]:
        if self._file_spans is None:
            layout = self.layout
            logger.debug("%s: scanning the whole file to resolve an image reference", layout.path)
            position = layout.positions["index"]
            spans = {}
            try:
                for record in tsv.iter_records(
                    layout.path, layout.n_fields, layout.data_start, index_field=position
                ):
                    try:
                        spans[int(record.fields[position])] = (record.start, record.end)
                    except ValueError:
                        continue  # reported when the row itself is read
            except tsv.TsvFormatError as error:
                raise GmaiMMBenchError(
                    f"{error} (found while looking for the row whose image question index {index} refers to)"
                ) from None
            self._file_spans = spans
        return self._file_spans

    def resolve(self, reference: bytes, index: int) -> bytes:
        path = self.layout.path
        chain = [index]
        target_text = reference.decode("utf-8", "replace").strip()
        while True:
            try:
                target = int(target_text)
            except ValueError:
                raise GmaiMMBenchError(
                    f"{path}: question index {chain[-1]}: the image field {target_text!r} is too short to be "
                    f"an image (<= {schema.IMAGE_REFERENCE_MAX_CHARS} characters) and is not the index of "
                    "another row; the file is corrupt: re-download or regenerate it"
                ) from None
            span = self.spans.get(target) or self._whole_file_spans(index).get(target)
            if span is None:
                raise GmaiMMBenchError(
                    f"{path}: question index {index}: its image refers to index {target}, which is not in "
                    "this file; the file is incomplete or corrupt: re-download or regenerate it"
                )
            if target in chain:
                raise GmaiMMBenchError(
                    f"{path}: question index {index}: image references loop ({' -> '.join(map(str, chain))} "
                    f"-> {target}); fix the file"
                )
            chain.append(target)
            if self._handle is None:
                self._handle = path.open("rb")
            self._handle.seek(span[0])
            field = tsv.parse_record(self._handle.read(span[1] - span[0]))[self.layout.positions["image"]]
            if len(field) > schema.IMAGE_REFERENCE_MAX_CHARS:
                return decode_image(field, path, target)
            target_text = field.decode("utf-8", "replace").strip()


def _text(field: bytes, path: Path, index: int, column: str) -> str | None:
    if not field:
        return None
    try:
        return field.decode("utf-8")
    except UnicodeDecodeError as error:
        raise GmaiMMBenchError(
            f"{path}: question index {index}: column {column!r} is not valid UTF-8 ({error}); "
            "re-download or regenerate the file"
        ) from None


#: The ``index`` column is stored as int64; a question id is never negative.
_INDEX_RANGE = range(2**63)


def _read_index(field: bytes, path: Path, offset: int) -> int:
    try:
        index = int(field)
    except ValueError:
        raise GmaiMMBenchError(
            f"{path}: {tsv.where(path, offset)}: the index {field[:40]!r} is not an integer; "
            "the file is corrupt or was edited: fix or re-download it"
        ) from None
    if index not in _INDEX_RANGE:
        problem = "is negative" if index < 0 else "does not fit in 64 bits"
        raise GmaiMMBenchError(
            f"{path}: {tsv.where(path, offset)}: the index {field[:40].decode('ascii', 'replace')} {problem} "
            "(the official indices run from 0 to about 21,000); the file is corrupt or was edited: fix or "
            "re-download it"
        )
    return index


def iter_rows(
    path: Path,
    start: int | None = None,
    end: int | None = None,
    *,
    seen: dict[int, tuple[Path, int]] | None = None,
    images: bool = True,
    answers: bool = False,
) -> Iterator[dict[str, Any]]:
    """Rows of one TSV (or of the byte range ``[start, end)``) as feature-named dicts.

    ``image`` is the image's bytes (``images=False``: None, nothing decoded, for metadata scans).
    ``seen`` (index -> file and offset) carries duplicate detection across calls. ``answers``:
    the file is a validation file, so an ``answer`` column must have an answer in every row (an
    empty cell would fail only after inference otherwise). Every bad input raises
    :class:`GmaiMMBenchError` naming the file and the question.
    """
    layout = _Layout.read(path)
    positions = layout.positions
    text_columns = [
        (name, positions.get(name)) for name in schema.FEATURE_NAMES if name not in ("index", "image")
    ]
    resolver = _ImageResolver(layout)
    seen = {} if seen is None else seen
    answer_required = answers and "answer" in positions
    try:
        records = tsv.iter_records(
            path,
            layout.n_fields,
            layout.data_start if start is None else start,
            end,
            index_field=positions["index"],
        )
        while True:
            try:
                record = next(records, None)
            except tsv.TsvFormatError as error:
                raise GmaiMMBenchError(str(error)) from None
            if record is None:
                return
            fields = record.fields
            index = _read_index(fields[positions["index"]], path, record.start)
            if index in seen:
                first_path, first_offset = seen[index]
                raise GmaiMMBenchError(
                    f"duplicate index {index}: {first_path} {tsv.where(first_path, first_offset)} and {path} "
                    f"{tsv.where(path, record.start)}; every question needs its own index: re-download or "
                    "regenerate the files"
                )
            seen[index] = (path, record.start)
            resolver.remember(index, record.start, record.end)
            row: dict[str, Any] = {"index": index}
            for name, position in text_columns:
                row[name] = None if position is None else _text(fields[position], path, index, name)
            image = fields[positions["image"]]
            if not images:
                row["image"] = None
            elif len(image) <= schema.IMAGE_REFERENCE_MAX_CHARS:
                row["image"] = resolver.resolve(image, index)
            else:
                row["image"] = decode_image(image, path, index)
            _check_answer(row, path, answer_required)
            yield row
    finally:
        resolver.close()


def _check_answer(row: dict[str, Any], path: Path, required: bool) -> None:
    answer = row["answer"]
    if answer is None:
        if required:
            raise GmaiMMBenchError(
                f"{path}: question index {row['index']}: the answer cell is empty, so the question can't be "
                "scored; fix the file or re-download it"
            )
        return
    if answer not in schema.OPTION_LETTERS:
        raise GmaiMMBenchError(
            f"{path}: question index {row['index']}: answer {answer!r} is not an option letter "
            f"({', '.join(schema.OPTION_LETTERS)}), so the question can't be scored; fix the file or "
            "re-download it"
        )
    if row[answer] is None:
        logger.warning(
            "%s: question index %d: answer %r names an empty option; kept as is", path, row["index"], answer
        )


# --- The builder ----------------------------------------------------------------------------------


@dataclass
class GmaiMMBenchConfig(datasets.BuilderConfig):
    """``splits``: which splits this configuration prepares.

    ``signature`` (set automatically from ``data_dir``) puts the files' sizes and mtimes into the
    cache key. ``range_bytes`` is the byte-range size one large file is cut into for ``num_proc``;
    ``batch_bytes`` how much data one Arrow table holds before it is written (bounds memory).
    ``verify_md5`` checks downloaded files against the official md5s.
    """

    splits: tuple[str, ...] = schema.SPLITS
    signature: str | None = None
    range_bytes: int = 256 * 1024 * 1024
    batch_bytes: int = 16 * 1024 * 1024
    verify_md5: bool = True


class GmaiMMBench(datasets.ArrowBasedBuilder):
    """GMAI-MMBench: ``validation`` (with answers) and ``test`` (11 parts, answers hidden)."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = GmaiMMBenchConfig
    BUILDER_CONFIGS = [  # noqa: RUF012 (datasets' class attribute is a list)
        GmaiMMBenchConfig(name="all", version=VERSION, description="validation and test"),
        GmaiMMBenchConfig(name="validation", version=VERSION, splits=("validation",), description="VAL only"),
        GmaiMMBenchConfig(
            name="test", version=VERSION, splits=("test",), description="the 11 test parts only"
        ),
    ]
    DEFAULT_CONFIG_NAME = "all"
    config: GmaiMMBenchConfig

    def __init__(self, *args: Any, hash: str | None = None, **kwargs: Any) -> None:
        # The loading script's hash covers only the script datasets copies, not the gmai_hf code it runs.
        super().__init__(*args, hash=_with_code_hash(hash), **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="GMAI-MMBench: a medical multimodal multiple-choice benchmark (VLMEvalKit TSVs).",
            features=FEATURES,
            homepage=schema.HOMEPAGE,
            citation=schema.CITATION,
            license="apache-2.0",
        )

    def _create_builder_config(
        self, config_name: str | None = None, custom_features: Any = None, **kwargs: Any
    ) -> tuple[datasets.BuilderConfig, str]:
        # kwargs: the configuration's fields, and config_id where datasets passes one (4.3+)
        if kwargs.get("data_dir") is not None:
            # one cache per set of files, however the folder was spelled (relative, symlinked)
            kwargs["data_dir"] = str(Path(kwargs["data_dir"]).resolve())
            if kwargs.get("signature") is None:
                config = self.builder_configs.get(config_name or self.DEFAULT_CONFIG_NAME)
                splits = kwargs.get("splits") or (config.splits if config else schema.SPLITS)
                kwargs["signature"] = files_signature(kwargs["data_dir"], splits)
        return super()._create_builder_config(config_name, custom_features, **kwargs)

    # --- every configuration shares the single-split caches ------------------------------------

    def _split_builder(self, split: str) -> GmaiMMBench:
        """The builder of configuration ``split``, whose cache holds that split for every configuration."""
        defaults = GmaiMMBenchConfig()
        overrides = {
            name: getattr(self.config, name)
            for name in ("range_bytes", "batch_bytes", "verify_md5")
            if getattr(self.config, name) != getattr(defaults, name)
        }
        return type(self)(
            cache_dir=self._cache_dir_root,
            dataset_name=self.dataset_name,
            config_name=split,
            hash=self.hash,
            token=self.token,
            data_dir=self.config.data_dir,
            storage_options=self.storage_options,
            **overrides,
        )

    def download_and_prepare(self, output_dir: str | None = None, *args: Any, **kwargs: Any) -> None:
        """Prepare each split in its own configuration's cache (``all`` reuses a prepared
        ``validation``, and the other way round) instead of one cache holding both."""
        if len(self.config.splits) == 1 or output_dir is not None:
            super().download_and_prepare(output_dir, *args, **kwargs)
            return
        self._split_builders: dict[str, GmaiMMBench] = {}
        for split in self.config.splits:
            builder = self._split_builder(split)
            try:
                builder.download_and_prepare(None, *args, **kwargs)
            except PermissionError as error:
                if self.config.data_dir is not None:
                    raise
                # "all" must not fail for validation users because the test repo is gated.
                logger.warning("the %s split is left out: %s", split, error)
                continue
            except FileNotFoundError:
                if self.config.data_dir is None:
                    raise
                continue  # this folder holds no file of that split
            except GmaiMMBenchError as error:
                raise GmaiMMBenchError(
                    f"{error}\n(This happened while preparing every split of configuration "
                    f"{self.config.name!r}. To load only one split, use gmai_hf.load_split(SPLIT, data_dir) "
                    "or datasets.load_dataset('gmai_mmbench', SPLIT, data_dir=..., split=SPLIT).)"
                ) from None
            self._split_builders[split] = builder
        if not self._split_builders and self.config.data_dir is not None:
            raise FileNotFoundError(
                "; ".join(missing_split_message(self.config.data_dir, split) for split in self.config.splits)
            )
        self.info.splits = datasets.SplitDict(dataset_name=self.dataset_name)
        for split, builder in self._split_builders.items():
            self.info.splits.add(builder.info.splits[split])
        self.info.dataset_size = sum(b.info.dataset_size or 0 for b in self._split_builders.values())

    def split_cache_dirs(self) -> dict[str, str]:
        """Where each prepared split's Arrow files are (after ``download_and_prepare``)."""
        builders = getattr(self, "_split_builders", None)
        if builders is None:
            return {split: self.cache_dir for split in self.info.splits or self.config.splits}
        return {split: builder.cache_dir for split, builder in builders.items()}

    def _make_split_generators_kwargs(self, prepare_split_kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"num_proc": prepare_split_kwargs.get("num_proc")}

    def _split_files(self) -> dict[str, list[Path]]:
        data_dir = self.config.data_dir
        if data_dir is None:
            downloaded = {}
            for split in self.config.splits:
                try:
                    downloaded[split] = download.download_split(
                        split, token=self.token, verify=self.config.verify_md5
                    )
                except PermissionError as error:
                    if len(self.config.splits) == 1:
                        raise
                    # "all" must not fail for validation users because the test repo is gated.
                    logger.warning("the %s split is left out: %s", split, error)
            return downloaded
        files = {split: local_split_files(data_dir, split) for split in self.config.splits}
        if not any(files.values()):
            raise FileNotFoundError(
                "; ".join(missing_split_message(data_dir, split) for split in self.config.splits)
            )
        return {split: paths for split, paths in files.items() if paths}

    def _split_generators(
        self, dl_manager: Any, num_proc: int | None = None
    ) -> list[datasets.SplitGenerator]:
        generators = []
        for split, paths in self._split_files().items():
            # Enough byte ranges that every process gets work, and none much over range_bytes.
            per_file = math.ceil((num_proc or 1) / len(paths))
            shards = []
            for path in paths:
                layout = _Layout.read(path)  # fail early on a bad header
                if beyond := schema.options_beyond(tsv.read_header(path)[0]):
                    logger.warning(
                        "%s: column(s) %s look like options beyond E; GMAI-MMBench has options A-E, so they "
                        "are not read (VLMEvalKit would show them): drop them or check the file",
                        path,
                        ", ".join(beyond),
                    )
                if split == "validation" and "answer" not in layout.positions:
                    logger.warning("%s: no answer column: validation answers will be None", path)
                data_start = layout.data_start
                size = path.stat().st_size
                if size <= data_start:
                    raise GmaiMMBenchError(
                        f"{path}: the file has a header but no questions; re-download or regenerate it"
                    )
                parts = max(per_file, math.ceil((size - data_start) / self.config.range_bytes))
                shards += [(str(path), a, b) for a, b in tsv.split_ranges(path, data_start, parts)]
            generators.append(
                datasets.SplitGenerator(name=split, gen_kwargs={"shards": shards, "split": split})
            )
        return generators

    def _generate_tables(
        self, shards: Sequence[tuple[str, int, int]], split: str
    ) -> Iterator[tuple[Any, pa.Table]]:
        seen: dict[int, tuple[Path, int]] = {}
        schema_ = self.info.features.arrow_schema
        for shard_id, (path, start, end) in enumerate(shards):
            columns: dict[str, list[Any]] = {name: [] for name in schema.FEATURE_NAMES}
            size, batch = 0, 0
            for row in iter_rows(Path(path), start, end, seen=seen, answers=split == "validation"):
                for name, value in row.items():
                    columns[name].append(value)
                size += len(row["image"])
                if size >= self.config.batch_bytes:
                    yield compat.table_key(shard_id, batch), _table(columns, schema_)
                    columns = {name: [] for name in schema.FEATURE_NAMES}
                    size, batch = 0, batch + 1
            if columns["index"]:
                yield compat.table_key(shard_id, batch), _table(columns, schema_)

    def _prepare_split(
        self,
        split_generator: datasets.SplitGenerator,
        file_format: str = "arrow",
        num_proc: int | None = None,
        max_shard_size: int | str | None = None,
    ) -> None:
        super()._prepare_split(split_generator, file_format, num_proc, max_shard_size)
        if num_proc and num_proc > 1 and len(split_generator.gen_kwargs["shards"]) > 1:
            # Each process saw only its own shards: check indices across them on what was written.
            self._check_unique_indices(split_generator, file_format)

    def _check_unique_indices(self, split_generator: datasets.SplitGenerator, file_format: str) -> None:
        import pyarrow.parquet as pq

        pattern = os.path.join(self._output_dir, f"{self.dataset_name}-{split_generator.name}*.{file_format}")
        chunks = []
        for written in sorted(glob.glob(pattern)):
            if file_format == "parquet":
                chunks.append(pq.read_table(written, columns=["index"]).column("index"))
            else:
                with pa.memory_map(written) as source:  # zero-copy: only the index column is touched
                    chunks += [batch.column("index") for batch in pa.ipc.open_stream(source)]
        duplicates = _duplicates(pa.chunked_array(chunks, pa.int64()))
        if duplicates:
            where = _locate(split_generator.gen_kwargs["shards"], duplicates[0])
            raise GmaiMMBenchError(
                f"duplicate index {duplicates[0]} in the {split_generator.name} split (found at {where}); "
                f"{len(duplicates)} indices are duplicated in all. Every question needs its own index: "
                "re-download or regenerate the files"
            )

    def _check_split(self, split: Any, available: Sequence[str]) -> None:
        name = str(split).split("[")[0] if split is not None else None
        if name in schema.SPLITS and name not in available:
            if name not in self.config.splits:
                raise ValueError(
                    f"the {self.config.name!r} configuration holds only {list(self.config.splits)}; load "
                    f"configuration 'all' or {name!r} for the {name} split"
                )
            if self.config.data_dir is None:
                raise PermissionError(
                    f"the {name} split could not be downloaded (its Hub repository is gated): accept its "
                    f"terms on the Hub, log in (`huggingface-cli login`) and load configuration {name!r}"
                )
            raise FileNotFoundError(missing_split_message(self.config.data_dir, name))

    def as_dataset(self, split: Any = None, in_memory: bool = False, **kwargs: Any) -> Any:
        builders = getattr(self, "_split_builders", None)
        if builders is None:
            if self.info.splits:
                self._check_split(split, list(self.info.splits))
            return super().as_dataset(split=split, in_memory=in_memory, **kwargs)
        self._check_split(split, list(builders))
        if split is None:
            return datasets.DatasetDict(
                {name: builder.as_dataset(name, in_memory=in_memory) for name, builder in builders.items()}
            )
        name = str(split).split("[")[0]
        if name not in builders:
            raise ValueError(f"unknown split {split!r}: this dataset has {', '.join(builders)}")
        return builders[name].as_dataset(split=split, in_memory=in_memory)

    def as_streaming_dataset(self, split: Any = None, base_path: str | None = None) -> Any:
        if self.config.data_dir is not None:
            self._check_split(
                split, [s for s in self.config.splits if local_split_files(self.config.data_dir, s)]
            )
        return super().as_streaming_dataset(split=split, base_path=base_path)


def load_split(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    dataset: str | None = None,
    **kwargs: Any,
) -> datasets.Dataset:
    """One split, preparing only that split's files (its configuration), not the whole benchmark.

    ``load_dataset("gmai_mmbench", split=...)`` uses the default configuration ``all``, which
    prepares (or downloads) every split; the tools that need one split call this instead.
    ``data_dir`` may also be a Parquet export (``gmai-hf export``), and ``dataset`` a Hub
    repository (or folder) holding one: it is read as it is, with no TSV preparation. Whatever
    the source, a duplicated or negative index is refused here, before any question is asked.
    """
    if split not in schema.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {schema.SPLITS}")
    source = fingerprints.export_source(data_dir, dataset)
    if source is not None:
        return load_export(split, source, **kwargs)
    ds = datasets.load_dataset(
        DATASET_NAME, split, data_dir=None if data_dir is None else str(data_dir), split=split, **kwargs
    )
    check_indices(ds, f"the {split} split of {data_dir or 'the official files'}")
    return ds


def load_export(split: str, source: str, **kwargs: Any) -> datasets.Dataset:
    """``split`` of a Parquet export (a folder, or a Hub dataset repository), checked to hold this
    benchmark's columns, so a wrong repository fails here and not deep in a run.

    An export made by gmai-hf is checked against its ``gmai_hf.json`` first: a folder's shards
    must be exactly those it records, byte for byte (sha256, remembered by path, size and mtime),
    and the rows read (from a folder, the Hub, or ``datasets``' cache) must have the split's
    recorded content fingerprint; a stale cache is rebuilt once, anything else is refused.
    """
    provenance = identity.read_provenance_of(source)
    if Path(source).is_dir():
        try:
            fingerprints.check_export(source, split, provenance)
        except fingerprints.ExportMismatch as error:
            raise GmaiMMBenchError(str(error)) from None
    ds = _read_export(split, source, **kwargs)
    missing = [name for name in REQUIRED_COLUMNS if name not in ds.column_names]
    if missing:
        raise GmaiMMBenchError(
            f"{source}: not a GMAI-MMBench export: the {split} split lacks the column(s) {missing}; "
            "export the TSVs with `gmai-hf export`"
        )
    check_indices(ds, f"{source} ({split} split)")
    expected = (((provenance or {}).get("splits") or {}).get(split) or {}).get("fingerprint")
    if (
        expected is not None
        and isinstance(ds, datasets.Dataset)
        and fingerprints.loaded_fingerprint(ds) != expected
    ):
        logger.info("%s: the cached %s rows are not the export's: reading it again", source, split)
        ds = _read_export(split, source, **{**kwargs, "download_mode": "force_redownload"})
        if fingerprints.loaded_fingerprint(ds) != expected:
            raise GmaiMMBenchError(
                f"{source}: the {split} rows are not those {fingerprints.PROVENANCE} records (their content "
                "fingerprint differs): the export was edited after it was made; export again"
            )
    return ds.cast(FEATURES) if ds.features != FEATURES else ds


def _read_export(split: str, source: str, **kwargs: Any) -> datasets.Dataset:
    """``datasets.load_dataset`` of an export's split, its failures said in one line. A folder's
    cache is keyed by its content (:func:`gmai_hf.fingerprints.folder_identity`): ``datasets``
    alone keeps serving the rows of a shard edited since it was first read."""
    if Path(source).is_dir():
        base = kwargs.pop("cache_dir", None) or datasets.config.HF_DATASETS_CACHE
        kwargs["cache_dir"] = str(Path(base) / "gmai_hf_exports" / fingerprints.folder_identity(Path(source)))
    try:
        return datasets.load_dataset(source, split=split, **kwargs)
    except compat.SPLIT_SIZES_ERROR:
        raise GmaiMMBenchError(
            f"{source}: the {split} split does not hold the rows its README.md records: a shard is missing, "
            "extra or was replaced; export again"
        ) from None
    except ValueError as error:
        if "split" not in str(error).lower():
            raise
        raise FileNotFoundError(f"{source} holds no {split} split (it has: {error})") from None


def _duplicates(indices: pa.ChunkedArray) -> list[int]:
    counts = indices.value_counts()
    return [item["values"].as_py() for item in counts if item["counts"].as_py() > 1]


def check_indices(ds: datasets.Dataset, where: str) -> None:
    """Refuse a split with a negative or duplicated ``index`` (read from the index column alone;
    a streamed split is not held anywhere to check: the TSV reader checks each file as it goes)."""
    import pyarrow.compute as pc

    if not isinstance(ds, datasets.Dataset):
        return
    try:
        indices = pc.cast(ds.data.column("index"), pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise GmaiMMBenchError(
            f"{where}: the index column does not hold integers; export the data again"
        ) from None
    if len(indices) and pc.min(indices).as_py() < 0:
        raise GmaiMMBenchError(
            f"{where}: question index {pc.min(indices).as_py()} is negative (question ids run from 0); "
            "the data were edited: fix or export them again"
        )
    duplicates = _duplicates(indices)
    if duplicates:
        raise GmaiMMBenchError(
            f"{where}: duplicate index {duplicates[0]} ({len(duplicates)} indices are duplicated in all); "
            "every question needs its own index: fix or export the data again"
        )


def _table(columns: dict[str, list[Any]], arrow_schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in arrow_schema:
        values = columns[field.name]
        if field.name == "image":
            arrays.append(
                pa.StructArray.from_arrays(
                    [pa.array(values, pa.binary()), pa.nulls(len(values), pa.string())],
                    fields=list(field.type),
                )
            )
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


def _locate(shards: Sequence[tuple[str, int, int]], index: int) -> str:
    """Where ``index`` occurs in the split's files (error path only: scans the index column)."""
    places = []
    for path in dict.fromkeys(path for path, _, _ in shards):
        layout = _Layout.read(Path(path))
        position = layout.positions["index"]
        for record in tsv.iter_records(path, layout.n_fields, layout.data_start):
            if record.fields[position].strip() == str(index).encode():
                places.append(f"{path} {tsv.where(path, record.start)}")
    return " and ".join(places)


# --- Registration ---------------------------------------------------------------------------------


@functools.cache
def _code_hash() -> str:
    """Hash of the code that shapes the cache, so a changed reader never reuses an old cache."""
    digest = hashlib.md5(usedforsecurity=False)
    for module in (tsv, schema):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _with_code_hash(hash: str | None) -> str:
    """``hash`` (the cache's last folder) with :func:`_code_hash` in it, once (idempotent: the
    per-split builders of configuration ``all`` pass their parent's on)."""
    code = _code_hash()
    if hash is None or hash.endswith(code):
        return hash or code
    return f"{hash[:16]}-{code}"


def register() -> None:
    """Make ``datasets.load_dataset("gmai_mmbench", ...)`` build with :class:`GmaiMMBench` (idempotent).

    ``datasets`` >= 4 runs no loading scripts, and this name needs no ``trust_remote_code`` with
    any version (3.x too); ``load_dataset_builder`` looks up ``dataset_module_factory`` in
    ``datasets.load`` at call time, so wrapping it for our name is enough (and, unlike registering
    a packaged module, works without ``data_dir``). Version differences: :mod:`gmai_hf.compat`.
    """
    from datasets import load

    compat.skip_lock_files_for(Path(__file__).resolve().parent)
    if getattr(load.dataset_module_factory, "_gmai_hf", False):
        return
    original = load.dataset_module_factory

    @functools.wraps(original)
    def dataset_module_factory(path: str, *args: Any, **kwargs: Any) -> load.DatasetModule:
        if path == DATASET_NAME:
            return load.DatasetModule(
                module_path=__name__, hash=_code_hash(), builder_kwargs={"dataset_name": DATASET_NAME}
            )
        return original(path, *args, **kwargs)

    dataset_module_factory._gmai_hf = True  # type: ignore[attr-defined]
    load.dataset_module_factory = dataset_module_factory
