"""The loading script under ``datasets`` 3.x (``trust_remote_code=True``) and ``gmai_hf`` beside it.

Rows, features and image bytes are compared with the same ground truth as ``tests/test_builder.py``
(which loads ``"gmai_mmbench"`` under the current ``datasets``): generated rows computed without
``datasets`` (:func:`benchmark_rows`), or the reader's rows for the bundled sample
(:func:`file_rows`). Equal to the same truth in both environments, the two forms are equal row for
row. Error messages are matched with the same patterns as in ``tests/test_builder.py``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest

import gmai_hf
from gmai_hf import builder, schema
from gmai_hf.testing.data import (
    ARROW_SCHEMA,
    benchmark_rows,
    dataset_rows,
    encode_image,
    file_rows,
    make_image,
    make_rows,
    stored_rows,
    write_tsv,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "loading_script" / "gmai_mmbench")
TRUTH = benchmark_rows(n_val=40, per_part=6, seed=0)  # conftest's data_dir


def load(data_dir: Path | str, name: str | None = None, **kwargs: Any) -> Any:
    """``load_dataset`` on the loading script, as a user of datasets 3.x would call it."""
    return datasets.load_dataset(SCRIPT, name, data_dir=str(data_dir), trust_remote_code=True, **kwargs)


def png(seed: int = 0) -> str:
    return encode_image(make_image(random.Random(seed), 8))


def row(index: int, **overrides: Any) -> dict[str, Any]:
    """One valid question, fields overridable (as in tests/test_builder.py)."""
    return {
        "index": index,
        "question": f"question {index}?",
        "A": "liver",
        "B": "kidney",
        "answer": "A",
        "image": png(index),
        "category": "liver",
        "clinical_vqa_task": "Organ Recognition - Abdomen",
        "department": "General Surgery",
        "perceptual_granularity": "Image level",
        "modality": "CT",
        "original_task": "synthetic",
        **overrides,
    }


# --- The script form: same features, rows and image bytes --------------------------------------


def test_this_environment_runs_loading_scripts() -> None:
    assert datasets.__version__.split(".")[0] in ("2", "3")
    assert "torch" not in sys.modules  # gmai_hf and its builder import nothing heavy


def test_the_script_is_a_thin_subclass_with_the_right_cache(data_dir: Path) -> None:
    instance = datasets.load_dataset_builder(SCRIPT, data_dir=str(data_dir), trust_remote_code=True)
    assert isinstance(instance, builder.GmaiMMBench)
    assert type(instance).__module__.startswith("datasets_modules.")  # the copy datasets imported
    assert instance.dataset_name == builder.DATASET_NAME
    # The script's own hash does not change with the gmai_hf code it runs; the cache key must.
    assert instance.hash.endswith(builder._code_hash())
    assert f"{os.sep}gmai_mmbench{os.sep}all-" in instance.cache_dir


@pytest.mark.parametrize("split", schema.SPLITS)
def test_features_and_arrow_schema(data_dir: Path, split: str) -> None:
    ds = load(data_dir, split=split)
    assert tuple(ds.features) == schema.FEATURE_NAMES
    assert ds.features["index"] == datasets.Value("int64")
    assert isinstance(ds.features["image"], datasets.Image)
    for name in schema.FEATURE_NAMES:
        if name not in ("index", "image"):
            assert ds.features[name] == datasets.Value("string"), name
    assert ds.data.schema.remove_metadata() == ARROW_SCHEMA


def test_rows_equal_the_generated_files(data_dir: Path) -> None:
    every = load(data_dir)
    assert set(every) == set(schema.SPLITS)
    for split in schema.SPLITS:
        assert stored_rows(load(data_dir, split=split)) == TRUTH[split], split
        assert stored_rows(every[split]) == TRUTH[split], split
    assert [r["index"] for r in TRUTH["test"]] == list(range(66))


@pytest.mark.parametrize("split", schema.SPLITS)
def test_the_sample_equals_the_reader(split: str) -> None:
    rows = stored_rows(load(gmai_hf.SAMPLE_DIR, split=split))
    assert len(rows) == {"validation": 200, "test": 110}[split]
    assert rows == file_rows(gmai_hf.SAMPLE_DIR, split)


def test_images_decode_to_pil(data_dir: Path) -> None:
    ds = load(data_dir, split="validation")
    assert {ds[i]["image"].mode for i in range(8)} >= {"RGB", "L", "RGBA"}


@pytest.mark.parametrize("name", ["all", "validation", "test"])
def test_configurations(data_dir: Path, name: str) -> None:
    splits = schema.SPLITS if name == "all" else (name,)
    got = load(data_dir, name)
    assert list(got) == list(splits)
    for split in splits:
        assert stored_rows(got[split]) == TRUTH[split]
        # every configuration shares the single-split caches
        assert got[split].cache_files == load(data_dir, split, split=split).cache_files


def test_a_configuration_without_the_split(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="'validation' configuration holds only"):
        load(data_dir, "validation", split="test")


@pytest.mark.parametrize("name", ["all", "test"])
def test_streaming_yields_the_same_rows(data_dir: Path, name: str) -> None:
    for split in schema.SPLITS if name == "all" else (name,):
        streamed = load(data_dir, name, split=split, streaming=True)
        assert isinstance(streamed, datasets.IterableDataset)
        assert stored_rows(streamed) == TRUTH[split]


def test_num_proc_two(tmp_path: Path, data_dir: Path) -> None:
    """Byte ranges of one file (quoted tabs and newlines inside) and several test parts."""
    rows = make_rows(60, seed=5)
    write_tsv(tmp_path / schema.VAL_FILENAME, rows)
    got = load(tmp_path, "validation", split="validation", num_proc=2, range_bytes=2048)
    assert stored_rows(got) == dataset_rows(rows)
    test = load(data_dir, "test", split="test", num_proc=2, cache_dir=str(tmp_path / "cache"))
    assert stored_rows(test) == TRUTH["test"]


# --- The same bad-file errors (patterns as in tests/test_builder.py) -----------------------------


def _not_image() -> str:
    return base64.b64encode(b"definitely not an image " * 4).decode()


def _cut_png() -> str:
    return base64.b64encode(base64.b64decode(png(7))[:-20]).decode()


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (row(3, image="!!!!" * 30), r"question index 3: the image field is not valid base64"),
        (row(3, image=_not_image()), r"question index 3: .* not an image"),
        (row(3, image=_cut_png()), r"question index 3: the PNG image is cut short"),
        (row(3, image="999"), r"question index 3: its image refers to index 999, which is not in this file"),
        (row(1), r"duplicate index 1: .*line 3 .* and .*line 5"),
    ],
    ids=["base64", "not-image", "cut-png", "unresolvable", "duplicate"],
)
def test_bad_rows_name_file_and_question(tmp_path: Path, bad_row: dict[str, Any], message: str) -> None:
    write_tsv(tmp_path / schema.VAL_FILENAME, [row(0), row(1), row(2), bad_row])
    with pytest.raises(builder.GmaiMMBenchError, match=message) as error:
        load(tmp_path, split="validation")
    assert schema.VAL_FILENAME in str(error.value)


def test_truncated_file(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / schema.VAL_FILENAME, [row(0), row(1), row(2)])
    path.write_bytes(path.read_bytes()[:-150])
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"VAL\.tsv: the file is truncated: the last row \(question index 2"
    ):
        load(tmp_path, split="validation")


def test_missing_required_column(tmp_path: Path) -> None:
    header = [name for name in schema.OFFICIAL_TEST_HEADER if name != "modality"]
    write_tsv(tmp_path / schema.VAL_FILENAME, [row(0)], header=header)
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"GMAI-MMBench_VAL\.tsv: missing required column\(s\) \['modality'\]"
    ):
        load(tmp_path, split="validation")


def test_duplicate_index_across_test_parts(tmp_path: Path) -> None:
    write_tsv(tmp_path / schema.test_filename(1), [row(0, answer=None), row(1, answer=None)])
    write_tsv(tmp_path / schema.test_filename(2), [row(2, answer=None), row(1, answer=None)])
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"duplicate index 1: .*part_1\.tsv line 3.*part_2\.tsv line 3"
    ):
        load(tmp_path, split="test")


def test_duplicate_index_across_processes(tmp_path: Path) -> None:
    write_tsv(tmp_path / schema.VAL_FILENAME, [row(i) for i in range(20)] + [row(3)])
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"duplicate index 3 in the validation split .*line 5 .* and .*line 22"
    ):
        load(tmp_path, split="validation", num_proc=2)


def test_truncated_file_with_two_processes(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / schema.VAL_FILENAME, make_rows(60, seed=5))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(builder.GmaiMMBenchError, match=r"VAL\.tsv: the file is truncated: the last row"):
        load(tmp_path, split="validation", num_proc=2, range_bytes=2048)


# --- gmai_hf itself under datasets 3.x: the registered name, load_split, streaming, num_proc -------


def test_the_registered_name_gives_the_same_rows(data_dir: Path, tmp_path: Path) -> None:
    for split in schema.SPLITS:
        by_name = datasets.load_dataset("gmai_mmbench", data_dir=str(data_dir), split=split)
        assert stored_rows(by_name) == TRUTH[split]
        assert stored_rows(gmai_hf.load_split(split, data_dir)) == TRUTH[split]
        streamed = datasets.load_dataset("gmai_mmbench", data_dir=str(data_dir), split=split, streaming=True)
        assert stored_rows(streamed) == TRUTH[split]
    two = gmai_hf.load_split("test", data_dir, num_proc=2, cache_dir=str(tmp_path))
    assert stored_rows(two) == TRUTH["test"]


def test_no_lock_file_beside_the_installed_package(data_dir: Path) -> None:
    """datasets < 4 would lock ``<folder above gmai_hf>.lock`` (site-packages.lock) for every builder."""
    stray = Path(f"{Path(builder.__file__).resolve().parent.parent}.lock")
    existed = stray.exists()
    datasets.load_dataset("gmai_mmbench", data_dir=str(data_dir), split="validation", streaming=True)
    load(data_dir, split="validation", streaming=True)
    assert stray.exists() == existed
    lock = datasets.streaming.lock_importable_file(builder.__file__)
    assert isinstance(lock, contextlib.nullcontext)


def test_a_new_user_loads_the_script_without_importing_gmai_hf() -> None:
    """A fresh interpreter, as in the dataset card: only datasets is imported by hand."""
    code = (
        "import sys, datasets\n"
        f"ds = datasets.load_dataset({SCRIPT!r}, data_dir={str(gmai_hf.SAMPLE_DIR)!r}, split='validation', "
        "trust_remote_code=True)\n"
        "print(len(ds), ds[0]['image'].size, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "200 (64, 64) False"
