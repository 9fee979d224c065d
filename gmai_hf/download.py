"""The official files: downloaded from the Hugging Face Hub, and recognised by their md5.

Used by the builder when no ``data_dir`` is given. The test repository is gated, so the user's
token is passed through to ``huggingface_hub``. ``fetch`` is injectable so the whole path (names,
repos, md5 checks, error messages) is testable without the Hub.

An md5 over a 9 GB file takes a while, so every verdict is remembered (in
``$HF_HOME/gmai_hf/verified.json``, keyed by the file's resolved path, size and mtime) and a
file is checked again only when it changed. The official byte sizes are not published in any
source we could read; the md5s are (see ``schema``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gmai_hf import schema
from gmai_hf.files import VerdictMemory

logger = logging.getLogger(__name__)

#: ``fetch(repo_id, filename, token) -> local path``; the default downloads from the Hub.
Fetch = Callable[[str, str, "str | bool | None"], "str | os.PathLike[str]"]

_MD5_CHUNK = 8 * 1024 * 1024
#: Seconds the one reachability request may take before the Hub counts as out of reach.
HUB_CHECK_TIMEOUT_S = 5.0
#: The ways to give data without the Hub, as the command line and ``load_dataset`` spell them.
OTHER_SOURCES = (
    "give the data another way: --sample (the bundled synthetic sample), --data-dir FOLDER (the official "
    "TSVs, or a Parquet export) or --dataset REPO (an export); in Python, data_dir=FOLDER"
)


@dataclass(frozen=True)
class OfficialFile:
    """One file of the official release: where it lives on the Hub and its md5."""

    split: str
    repo_id: str
    filename: str
    md5: str
    part: int | None = None  # test part number (1-based); None for VAL


def official_files(split: str) -> list[OfficialFile]:
    """The official files making up ``split`` ("validation" or "test"), in order."""
    if split == "validation":
        return [OfficialFile(split, schema.VAL_REPO, schema.VAL_FILENAME, schema.VAL_MD5)]
    if split == "test":
        return [
            OfficialFile(split, schema.TEST_REPO, schema.test_filename(part), schema.TEST_MD5[part], part)
            for part in range(1, schema.TEST_PARTS + 1)
        ]
    raise ValueError(f"unknown split {split!r}; expected one of {schema.SPLITS}")


def md5sum(path: str | os.PathLike[str]) -> str:
    """Hex md5 of a file, streamed in chunks (files are many GB)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_MD5_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def official_md5(split: str, name: str) -> str | None:
    """The official md5 of the ``split`` file named ``name`` (any of its known names), else None."""
    for part, names in enumerate(official_names(split), start=1):
        if name in names:
            return schema.VAL_MD5 if split == "validation" else schema.TEST_MD5[part]
    return None


def official_names(split: str) -> list[list[str]]:
    """For each file of ``split``, the names it is published under (preferred first)."""
    if split == "validation":
        return [[schema.VAL_FILENAME, *schema.VAL_ALIASES]]
    if split == "test":
        return [
            [schema.test_filename(part), schema.test_filename_renamed(part)]
            for part in range(1, schema.TEST_PARTS + 1)
        ]
    raise ValueError(f"unknown split {split!r}; expected one of {schema.SPLITS}")


_MEMORY = VerdictMemory("verified.json")


def remember(path: str | os.PathLike[str], md5: str, official: bool) -> None:
    """Record that ``path`` (as it is now) has ``md5``, and whether that is the official one."""
    _MEMORY.remember(path, md5=md5, official=official)


def recall(path: str | os.PathLike[str]) -> bool | None:
    """Whether ``path`` was found to be the official file (None: never checked, or changed since)."""
    entry = _MEMORY.recall(path)
    return None if entry is None else bool(entry.get("official"))


def check_files(paths: Sequence[Path], split: str) -> dict[Path, bool | None]:
    """md5 every file of ``split`` now (and remember it): True official, False not, None unknown name."""
    verdicts: dict[Path, bool | None] = {}
    for path in paths:
        expected = official_md5(split, path.name)
        if expected is None:
            verdicts[path] = None
            continue
        logger.info("computing the md5 of %s", path)
        actual = md5sum(path)
        remember(path, actual, actual == expected)
        verdicts[path] = actual == expected
    return verdicts


def verify_md5(path: str | os.PathLike[str], expected: str) -> None:
    """Raise ``ValueError`` naming the file and both sums when ``path`` is not the official file."""
    actual = md5sum(path)
    remember(path, actual, actual == expected)
    if actual != expected:
        raise ValueError(
            f"{path}: md5 mismatch: expected {expected}, got {actual}. The download is corrupt or "
            "incomplete: delete the file and load again (the Hub cache re-downloads it)"
        )


def hub_fetch(repo_id: str, filename: str, token: str | bool | None = None) -> Path:
    """Download ``filename`` from the dataset repo ``repo_id`` into the Hub cache."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    if not isinstance(try_to_load_from_cache(repo_id, filename, repo_type="dataset"), str):
        reach_hub(repo_id, filename, token)
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", token=token))
    except GatedRepoError as error:
        raise PermissionError(
            f"{repo_id} is gated: accept its terms at https://huggingface.co/datasets/{repo_id} and pass "
            "your token (`huggingface-cli login`, HF_TOKEN, or load_dataset(..., token=...)); "
            "or download the files yourself and pass data_dir"
        ) from error
    except LocalEntryNotFoundError as error:
        raise ConnectionError(
            f"cannot download {filename} from the Hub dataset {repo_id} (offline, or no connection) and it "
            "is not in the local Hub cache; connect (unset HF_HUB_OFFLINE), or pass data_dir with the files"
        ) from error


def require_hub(split: str, token: str | bool | None = None) -> None:
    """Fail within seconds, in one line, when ``split`` is not in the local Hub cache and the Hub
    cannot be reached (a run checks this before it makes anything)."""
    if len(cached_split_files(split)) < len(official_files(split)):
        first = official_files(split)[0]
        reach_hub(first.repo_id, first.filename, token)


def reach_hub(repo_id: str, filename: str, token: str | bool | None = None) -> None:
    """One quick request for ``filename``'s metadata: without it, a download from an unreachable
    Hub retries for half a minute, printing every retry, before it says so."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    where = f"{filename} is not in the local Hub cache"
    if constants.HF_HUB_OFFLINE:
        raise ConnectionError(f"{where} and the Hub is off (HF_HUB_OFFLINE=1): {OTHER_SOURCES}")
    url = hf_hub_url(repo_id, filename, repo_type="dataset")
    try:
        get_hf_file_metadata(url, token=token, timeout=HUB_CHECK_TIMEOUT_S, retry_on_errors=False)
    except HfHubHTTPError:
        return  # the Hub answered (a gated repository, say): the download itself says what to do
    except Exception as error:  # no connection (DNS, refused, timeout): the HTTP client's own types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConnectionError(
            f"{where} and the Hugging Face Hub cannot be reached ({reason}): {OTHER_SOURCES}"
        ) from None


def download_split(
    split: str,
    *,
    token: str | bool | None = None,
    fetch: Fetch | None = None,
    verify: bool = True,
) -> list[Path]:
    """Local paths of ``split``'s official files, fetched (default: from the Hub) and md5-verified."""
    fetch = fetch or hub_fetch
    paths = []
    for official in official_files(split):
        logger.info("fetching %s from %s", official.filename, official.repo_id)
        path = Path(fetch(official.repo_id, official.filename, token))
        if verify:
            logger.info("verifying md5 of %s", path)
            verify_md5(path, official.md5)
        paths.append(path)
    return paths


def cached_split_files(split: str) -> list[Path]:
    """``split``'s official files already in the local Hub cache (no network), in order."""
    from huggingface_hub import try_to_load_from_cache

    paths = []
    for official in official_files(split):
        cached = try_to_load_from_cache(official.repo_id, official.filename, repo_type="dataset")
        if isinstance(cached, str):
            paths.append(Path(cached))
    return paths
