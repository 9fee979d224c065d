"""The Hub path (no ``data_dir``), with the fetch function pointed at local files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import datasets
import pytest

from gmai_hf import download, schema
from gmai_hf.testing.data import write_benchmark


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A fake Hub: generated official files served by a fetch that records its calls; md5s made to match."""
    files = write_benchmark(tmp_path / "hub", n_val=12, per_part=3)
    calls: list[tuple[str, str, object]] = []

    def fetch(repo_id: str, filename: str, token: object = None) -> Path:
        calls.append((repo_id, filename, token))
        return files / filename

    monkeypatch.setattr(download, "hub_fetch", fetch)
    monkeypatch.setattr(schema, "VAL_MD5", download.md5sum(files / schema.VAL_FILENAME))
    monkeypatch.setattr(
        schema, "TEST_MD5", {p: download.md5sum(files / schema.test_filename(p)) for p in range(1, 12)}
    )
    return {"dir": files, "calls": calls}


def test_official_files() -> None:
    (val,) = download.official_files("validation")
    assert (val.repo_id, val.filename, val.md5) == (schema.VAL_REPO, schema.VAL_FILENAME, schema.VAL_MD5)
    test = download.official_files("test")
    assert [f.part for f in test] == list(range(1, 12))
    assert {f.repo_id for f in test} == {schema.TEST_REPO}
    assert test[1].filename == "GMAI_mm_bench_TEST_part_2.tsv" and test[1].md5 == schema.TEST_MD5[2]
    with pytest.raises(ValueError, match="unknown split 'train'"):
        download.official_files("train")


def test_md5sum_streams_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    monkeypatch.setattr(download, "_MD5_CHUNK", 7)
    assert download.md5sum(path) == hashlib.md5(b"x" * 1000).hexdigest()


def test_md5_mismatch_names_file_and_sums(tmp_path: Path) -> None:
    path = tmp_path / schema.VAL_FILENAME
    path.write_bytes(b"not the file")
    with pytest.raises(
        ValueError, match=rf"{schema.VAL_FILENAME}: md5 mismatch: expected {schema.VAL_MD5}, got"
    ):
        download.verify_md5(path, schema.VAL_MD5)


def test_download_split_passes_the_token(hub: dict) -> None:
    paths = download.download_split("test", token="hf_secret")
    assert [p.name for p in paths] == [schema.test_filename(p) for p in range(1, 12)]
    assert hub["calls"][0] == (schema.TEST_REPO, schema.test_filename(1), "hf_secret")


def test_load_dataset_without_data_dir_downloads_and_verifies(hub: dict, tmp_path: Path) -> None:
    ds = datasets.load_dataset("gmai_mmbench", split="validation", cache_dir=str(tmp_path / "c"), token="tok")
    assert len(ds) == 12 and ds.features["image"] == datasets.Image()
    assert (schema.VAL_REPO, schema.VAL_FILENAME, "tok") in hub["calls"]
    assert (schema.TEST_REPO, schema.test_filename(11), "tok") in hub["calls"]  # config "all": both splits
    test = datasets.load_dataset("gmai_mmbench", "test", split="test", cache_dir=str(tmp_path / "c"))
    assert len(test) == 33 and test[0]["answer"] is None


def test_corrupt_download_is_refused(hub: dict, tmp_path: Path) -> None:
    shutil.copy(hub["dir"] / schema.VAL_FILENAME, tmp_path / "copy.tsv")
    with (hub["dir"] / schema.VAL_FILENAME).open("ab") as handle:
        handle.write(b"\n")
    with pytest.raises(ValueError, match=r"GMAI-MMBench_VAL\.tsv: md5 mismatch"):
        datasets.load_dataset("gmai_mmbench", "validation", split="validation", cache_dir=str(tmp_path / "c"))


def test_gated_repo_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(*args: object, **kwargs: object) -> str:
        # Built without __init__, whose HTTP response argument differs across huggingface_hub versions.
        error = GatedRepoError.__new__(GatedRepoError)
        Exception.__init__(error, "403 gated")
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", gated)  # the quick check: the Hub answers
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(PermissionError, match=r"OpenGVLab/GMAI-MMBench is gated: accept its terms"):
        download.hub_fetch(schema.TEST_REPO, schema.test_filename(1), token=None)


def test_offline_error_says_what_to_do() -> None:
    # conftest sets HF_HUB_OFFLINE=1 and an empty Hub cache: the real hf_hub_download fails locally.
    with pytest.raises(
        ConnectionError, match=r"VAL\.tsv is not in the local Hub cache and the Hub is off.*data_dir="
    ):
        download.hub_fetch(schema.VAL_REPO, schema.VAL_FILENAME)


def test_gated_test_repo_does_not_block_validation(
    hub: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Config "all" without a token still gives validation; asking for test then says what to do."""

    def fetch(repo_id: str, filename: str, token: object = None) -> Path:
        if repo_id == schema.TEST_REPO:
            raise PermissionError(f"{repo_id} is gated: accept its terms")
        return hub["dir"] / filename

    monkeypatch.setattr(download, "hub_fetch", fetch)
    cache = str(tmp_path / "c")
    assert len(datasets.load_dataset("gmai_mmbench", split="validation", cache_dir=cache)) == 12
    with pytest.raises(PermissionError, match=r"gated.*load configuration 'test'"):
        datasets.load_dataset("gmai_mmbench", split="test", cache_dir=cache)
    with pytest.raises(PermissionError, match=r"is gated: accept its terms"):
        datasets.load_dataset("gmai_mmbench", "test", split="test", cache_dir=cache)
