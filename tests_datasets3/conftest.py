"""The loading-script suite: run only with ``datasets`` < 4 (``.ci/run``'s second environment).

``datasets`` >= 4 runs no loading scripts, so this folder is not in the main ``testpaths``; it runs
offline, with caches in a temporary folder, like ``tests/``.
"""

from __future__ import annotations

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="gmai-hf-tests-ds3-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_CACHE, "hf")  # also holds the copied loading script (modules/)
os.environ["HF_DATASETS_CACHE"] = os.path.join(_CACHE, "datasets")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from gmai_hf import compat  # noqa: E402
from gmai_hf.testing.data import write_benchmark  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    if not compat.RUNS_LOADING_SCRIPTS:
        import datasets

        raise pytest.UsageError(
            f"tests_datasets3/ tests the loading script, which datasets {datasets.__version__} does not "
            "run (datasets >= 4 runs no loading scripts): run it with datasets 3.x, as .ci/run does"
        )


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same generated files as ``tests/conftest.py``'s: VAL (40) + 11 test parts (6 each)."""
    return write_benchmark(tmp_path_factory.mktemp("gmai-data"), n_val=40, per_part=6, seed=0)
