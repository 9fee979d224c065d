"""Shared fixtures. Tests run offline, with caches in a temporary folder, on generated data."""

from __future__ import annotations

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="gmai-hf-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_CACHE, "hf")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_CACHE, "datasets")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from gmai_hf.testing.data import write_benchmark  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated data directory laid out like the official release: VAL (40) + 11 test parts (6 each)."""
    return write_benchmark(tmp_path_factory.mktemp("gmai-data"), n_val=40, per_part=6, seed=0)
