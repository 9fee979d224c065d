"""``gmai-hf export``: the Hub's Parquet form, read back three ways question for question, and the
upload of only what changed (checked on the exact operations sent to the Hub client)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from gmai_hf import SAMPLE_DIR, export, fingerprints, runner, schema
from gmai_hf.builder import FEATURES, load_split
from gmai_hf.commands import export as export_command
from gmai_hf.runner import RunConfig
from gmai_hf.testing.data import write_benchmark


def raw_rows(ds: datasets.Dataset) -> list[dict[str, Any]]:
    rows = ds.cast_column("image", datasets.Image(decode=False)).to_list()
    return [{**row, "image": row["image"]["bytes"]} for row in rows]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 64 px noise images: large enough that a 60 KB shard limit cuts a split into several shards
    return write_benchmark(tmp_path_factory.mktemp("tsv"), n_val=40, per_part=6, seed=3, image_size=64)


@pytest.fixture(scope="module")
def exported(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "gmai"
    export.export(out, data_dir=source, max_shard_size="60KB")
    return out


def test_the_hub_layout_and_card(exported: Path) -> None:
    shards = sorted(path.name for path in (exported / "data").glob("validation-*.parquet"))
    assert len(shards) > 1 and shards[0] == f"validation-00000-of-{len(shards):05d}.parquet"
    assert all(path.stat().st_size <= 60_000 + 20_000 for path in (exported / "data").glob("*.parquet"))
    for path in (exported / "data").glob("*.parquet"):
        metadata = pq.ParquetFile(path).metadata
        assert all(
            metadata.row_group(i).num_rows <= export.ROW_GROUP_ROWS for i in range(metadata.num_row_groups)
        )
    text = (exported / "README.md").read_text()
    card = yaml.safe_load(text.split("---")[1])
    assert card["configs"] == [
        {
            "config_name": "default",
            "default": True,
            "data_files": [
                {"split": "validation", "path": "data/validation-*.parquet"},
                {"split": "test", "path": "data/test-*.parquet"},
            ],
        }
    ]
    assert datasets.Features._from_yaml_list(card["dataset_info"]["features"]) == FEATURES
    assert {s["name"]: s["num_examples"] for s in card["dataset_info"]["splits"]} == {
        "validation": 40,
        "test": 66,
    }
    assert card["size_categories"] == ["n<1K"]  # the Hub's bucket for these 106 questions
    assert card["license"] == "apache-2.0" and "visual-question-answering" in card["task_categories"]
    assert "## The lexical tree" in text and "@misc{chen2024gmaimmbench" in text
    provenance = json.loads((exported / "gmai_hf.json").read_text())
    assert provenance["splits"]["validation"]["files"][0]["name"] == schema.VAL_FILENAME


def test_plain_datasets_reads_it_without_gmai_hf(exported: Path, source: Path) -> None:
    code = (
        "import datasets, json, sys\n"
        f"ds = datasets.load_dataset({str(exported)!r})\n"
        "assert 'gmai_hf' not in sys.modules\n"
        "print(json.dumps({s: [len(ds[s]), str(ds[s].features['image'])] for s in ds}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts == {
        "validation": [40, "Image(mode=None, decode=True)"],
        "test": [66, "Image(mode=None, decode=True)"],
    }


@pytest.mark.parametrize("split", schema.SPLITS)
def test_rows_features_and_image_bytes_equal_the_tsv_path(exported: Path, source: Path, split: str) -> None:
    from_tsv = load_split(split, source)
    plain = datasets.load_dataset(str(exported), split=split)
    assert plain.features == from_tsv.features == FEATURES
    assert raw_rows(plain) == raw_rows(from_tsv), "question for question, byte for byte"
    assert raw_rows(load_split(split, exported)) == raw_rows(from_tsv)
    assert raw_rows(load_split(split, dataset=str(exported))) == raw_rows(from_tsv)
    streamed = datasets.load_dataset(str(exported), split=split, streaming=True)
    streamed = streamed.cast_column("image", datasets.Image(decode=False))
    assert [{**row, "image": row["image"]["bytes"]} for row in streamed] == raw_rows(from_tsv)


def test_every_command_reads_the_export(
    exported: Path, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gmai_hf import cli

    for flag in ("--data-dir", "--dataset"):
        out = tmp_path / flag.strip("-")
        assert cli.main(["run", "--model", "random", flag, str(exported), "--output-dir", str(out)]) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["total"] == 40 and results["data"]["source"] == "export"
        assert results["data"]["files"][0]["name"] == schema.VAL_FILENAME
        assert cli.main(["tree", flag, str(exported), "--depth", "1"]) == 0
        assert "40 questions by clinical_vqa_task" in capsys.readouterr().out
        assert cli.main(["info", flag, str(exported), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["test"]["questions"] == 66
    predictions = tmp_path / "data-dir" / "predictions.jsonl"
    assert (
        cli.main(["score", str(predictions), "--dataset", str(exported), "--output-dir", str(tmp_path / "s")])
        == 0
    )
    assert cli.main(["prepare", "--data-dir", str(exported)]) == 0
    assert "validation: 40 questions (a Parquet export" in capsys.readouterr().out
    # the same source files: a run on the TSVs resumes on their export
    tsv_run = tmp_path / "tsv"
    assert runner.run(RunConfig(model="random", output_dir=tsv_run, data_dir=str(source), limit=10)) == 0
    again = RunConfig(model="random", output_dir=tsv_run, dataset=str(exported), limit=10)
    assert runner.run(again) == 0
    assert json.loads((tsv_run / "results.json").read_text())["run"]["answered_now"] == 0


def test_the_sample_export_says_it_is_synthetic(tmp_path: Path) -> None:
    out = tmp_path / "sample"
    export.export(out, data_dir=SAMPLE_DIR, splits=["validation"])
    assert [path.name for path in (out / "data").glob("*.parquet")] == ["validation-00000-of-00001.parquet"]
    assert "synthetic sample" in (out / "README.md").read_text()
    results_dir = tmp_path / "run"
    assert runner.run(RunConfig(model="random", output_dir=results_dir, data_dir=str(out), limit=5)) == 0
    data = json.loads((results_dir / "results.json").read_text())["data"]
    assert data["official"] is False and any("synthetic" in problem for problem in data["problems"])


def test_a_wrong_folder_or_split_is_said_plainly(tmp_path: Path, exported: Path) -> None:
    only_val = tmp_path / "val"
    export.export(only_val, data_dir=SAMPLE_DIR, splits=["validation"])
    with pytest.raises(FileNotFoundError, match="holds no test split"):
        load_split("test", only_val)
    with pytest.raises(ValueError, match="500 elephants"):
        export.parse_size("500 elephants")
    assert export.parse_size("1.5GB") == 1_500_000_000 and export.parse_size("256MiB") == 256 * 2**20


class FakeHub:
    """The parts of ``huggingface_hub.HfApi`` an upload uses, recording what it is asked to do."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.commits: list[list[Any]] = []
        self.repos: list[tuple[str, bool]] = []

    def create_repo(self, repo_id: str, *, repo_type: str, private: bool, exist_ok: bool) -> None:
        assert repo_type == "dataset" and exist_ok
        self.repos.append((repo_id, private))

    def list_repo_tree(self, repo_id: str, *, repo_type: str, recursive: bool, expand: bool) -> list[Any]:
        assert recursive and expand
        return [
            SimpleNamespace(
                path=path,
                blob_id=meta["blob_id"],
                lfs=SimpleNamespace(sha256=meta["sha256"]) if meta["sha256"] else None,
            )
            for path, meta in self.files.items()
        ]

    def create_commit(
        self, repo_id: str, *, operations: list[Any], repo_type: str, commit_message: str
    ) -> None:
        from huggingface_hub import CommitOperationAdd

        self.commits.append(operations)
        for operation in operations:
            if isinstance(operation, CommitOperationAdd):
                path = Path(operation.path_or_fileobj)
                lfs = path.suffix == ".parquet"
                self.files[operation.path_in_repo] = {
                    "sha256": fingerprints.sha256_file(path) if lfs else None,
                    "blob_id": export._git_blob_sha1(path),
                }
            else:
                del self.files[operation.path_in_repo]


def test_push_uploads_only_what_changed(source: Path, tmp_path: Path) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    out = tmp_path / "gmai"
    export.export(out, data_dir=source, max_shard_size="60KB")
    hub = FakeHub()
    first = export.push_to_hub(out, "me/gmai-mmbench", private=True, api=hub)
    local = sorted(p.relative_to(out).as_posix() for p in [*out.glob("*.*"), *(out / "data").glob("*")])
    assert sorted(first["uploaded"]) == local and hub.repos == [("me/gmai-mmbench", True)]
    assert all(isinstance(op, CommitOperationAdd) for op in hub.commits[0])
    assert export.push_to_hub(out, "me/gmai-mmbench", api=hub) == {"uploaded": [], "deleted": []}
    assert len(hub.commits) == 1, "nothing changed: no commit"
    export.export(out, data_dir=source, max_shard_size="10MB", splits=["validation"])  # one shard now
    sent = export.push_to_hub(out, "me/gmai-mmbench", api=hub)
    # the card's sizes and the record of the shards changed; the test split is kept, byte for byte
    assert sent["uploaded"] == ["README.md", "gmai_hf.json", "data/validation-00000-of-00001.parquet"]
    assert "data/test-*.parquet" in (out / "README.md").read_text()
    assert sent["deleted"] and all(name.startswith("data/validation-") for name in sent["deleted"])
    assert any(isinstance(op, CommitOperationDelete) for op in hub.commits[-1])
    assert not any(name.startswith("data/test-") for name in sent["deleted"]), "the test shards stay"


def test_the_cli(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = FakeHub()
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: hub)
    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    args = parser.parse_args(
        [
            "--data-dir",
            str(source),
            "--output-dir",
            str(tmp_path / "o"),
            "--split",
            "test",
            "--push-to-hub",
            "me/x",
        ]
    )
    assert export_command.main(args) == 0
    out = capsys.readouterr().out
    assert "datasets.load_dataset(" in out and "me/x: " in out and hub.commits
    assert not list((tmp_path / "o" / "data").glob("validation-*"))
