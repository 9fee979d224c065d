"""``gmai-hf prepare`` and ``gmai-hf info``."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import datasets
import pytest

from gmai_hf import cli, schema
from gmai_hf.commands import info, prepare
from gmai_hf.testing.data import make_rows, write_benchmark, write_tsv


def run(module: object, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.main(parser.parse_args(argv))


def test_prepare_builds_the_cache_load_dataset_reuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_benchmark(tmp_path / "data", n_val=9, test_parts=(1, 2), per_part=4)
    cache = str(tmp_path / "cache")
    assert run(prepare, ["--data-dir", str(data), "--cache-dir", cache, "--num-proc", "2"]) == 0
    out = capsys.readouterr().out
    assert "validation: 9 questions" in out and "test: 8 questions" in out
    cached = [p for p in Path(cache).rglob("*.arrow")]
    assert cached
    ds = datasets.load_dataset("gmai_mmbench", data_dir=str(data), split="test", cache_dir=cache)
    assert {f["filename"] for f in ds.cache_files} <= {str(p) for p in cached}  # no second preparation


def test_prepare_one_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_benchmark(tmp_path / "data", n_val=5, test_parts=())
    assert (
        run(prepare, ["--data-dir", str(data), "--split", "validation", "--cache-dir", str(tmp_path / "c")])
        == 0
    )
    out = capsys.readouterr().out
    assert "validation: 5 questions" in out
    # the import that registers the name is said with the call, not left for the user to discover
    assert "load it with: import gmai_hf; datasets.load_dataset('gmai_mmbench', 'validation'," in out


def test_info_counts_match_the_files(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(info, ["--data-dir", str(data_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    val = make_rows(40, seed=0)
    assert summary["validation"]["questions"] == 40
    assert summary["validation"]["answers_present"] == 40
    assert summary["test"]["questions"] == 66 and summary["test"]["answers_present"] == 0
    assert len(summary["test"]["files"]) == 11
    assert summary["validation"]["by"]["clinical_vqa_task"] == dict(
        Counter(r["clinical_vqa_task"] for r in val)
    )
    assert summary["validation"]["by"]["modality"] == dict(Counter(r["modality"] for r in val))
    options = Counter(str(sum(r[letter] is not None for letter in schema.OPTION_LETTERS)) for r in val)
    assert summary["validation"]["options_histogram"] == dict(sorted(options.items()))


def test_info_text_output(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(info, ["--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "validation: 40 questions in 1 file(s)" in out
    assert "test: 66 questions in 11 file(s)" in out
    assert "answers present: 0 of 66 (hidden)" in out
    for dimension in info.DIMENSIONS:
        assert f"per {dimension} (" in out


def test_info_never_decodes_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(3, seed=1)
    rows[1]["image"] = "!" * 100  # invalid base64: preparing would fail, info must not care
    from gmai_hf.testing.data import write_tsv

    write_tsv(tmp_path / schema.VAL_FILENAME, rows)
    assert run(info, ["--data-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["validation"]["questions"] == 3


def test_info_without_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(info, ["--data-dir", str(tmp_path)]) == 1
    assert "no GMAI-MMBench files in" in capsys.readouterr().out


def test_bad_data_ends_with_one_clear_line_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = make_rows(3)
    rows[1]["image"] = "!!!! not base64 " * 10
    rows[2]["index"] = 0
    write_tsv(tmp_path / schema.VAL_FILENAME, rows)
    assert cli.main(["prepare", "--data-dir", str(tmp_path)]) == 2
    assert f"{schema.VAL_FILENAME}: question index 1: the image field is not valid base64" in caplog.text
    caplog.clear()
    assert cli.main(["info", "--data-dir", str(tmp_path)]) == 2  # info reads no image: the index trips it
    assert "duplicate index 0" in caplog.text and schema.VAL_FILENAME in caplog.text
