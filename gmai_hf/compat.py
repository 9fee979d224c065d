"""Every difference between ``datasets`` versions that gmai-hf depends on, in one place.

gmai-hf supports ``datasets`` >= 3.0 (3.x, 4.x, 5.x). 3.0 is the oldest release CI tests (the
loading-script suite ``tests_datasets3/`` runs under 3.0.0 and 3.6.0, see ``.ci/run``), and the
oldest that runs the loading script the issue asked for. ``datasets`` 2.16 to 2.21 passed the same
tests once by hand but are not claimed; older 2.x lack ``datasets.exceptions.DatasetGenerationError``,
which :class:`gmai_hf.builder.GmaiMMBenchError` subclasses so that ``datasets`` passes it through
unwrapped (the message naming the file and question stays the last line).

Differences are detected by feature, not by version number, so a backport cannot fool them:

- ``datasets.builder.Key`` (4.5+): the key ``_generate_tables`` yields, ``(original shard id, batch
  id)``, which 4.5+ uses for per-source-shard lengths. Older versions accept any key and ignore it
  (3.x) or only use it for ordering: :func:`table_key` returns a plain tuple there.
- ``config_id`` (4.3+) is an extra keyword of ``DatasetBuilder.__init__`` and
  ``_create_builder_config``; ``GmaiMMBench._create_builder_config`` forwards it only when given,
  which fits both signatures without a branch.
- ``datasets`` < 4, on creating any builder, takes a file lock named after the folder *above* the
  builder's module, meant for loading scripts copied into the modules cache: for
  ``gmai_hf.builder`` that is ``site-packages.lock`` (or ``<checkout>.lock`` beside an editable
  install), a stray file that cannot even be created where site-packages is read-only.
  :func:`skip_lock_files_for` drops that lock for gmai_hf's own modules (nothing rewrites them).
- Loading scripts run only with ``datasets`` < 4 (with ``trust_remote_code=True``);
  :data:`RUNS_LOADING_SCRIPTS` says whether this one does (its script loader exists). The
  ``load_dataset("gmai_mmbench")`` name registered by :func:`gmai_hf.builder.register` works with
  every version: ``datasets.load.dataset_module_factory`` and ``DatasetModule(module_path, hash,
  builder_kwargs)`` have the same shape from 3.0 to 5.x.
- ``NonMatchingSplitsSizesError`` (a folder's rows disagree with its card's split sizes) is in
  ``datasets.exceptions`` from 3.x on, in ``datasets.utils.info_utils`` before:
  :data:`SPLIT_SIZES_ERROR` is whichever exists.

Nothing else in gmai-hf may branch on the ``datasets`` version.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from pathlib import Path
from typing import Any

import datasets

SPLIT_SIZES_ERROR: type[Exception] = getattr(datasets.exceptions, "NonMatchingSplitsSizesError", None) or (
    importlib.import_module("datasets.utils.info_utils").NonMatchingSplitsSizesError
)

try:  # datasets >= 4.5
    from datasets.builder import Key as _Key
except ImportError:  # datasets 3.0 - 4.4
    _Key = None

#: Whether ``datasets.load_dataset`` runs loading scripts (``trust_remote_code=True``): < 4 only.
RUNS_LOADING_SCRIPTS: bool = hasattr(datasets.load, "LocalDatasetModuleFactoryWithScript")


def table_key(shard: int, batch: int) -> Any:
    """The key of the ``batch``-th table of source shard ``shard`` in ``_generate_tables``.

    A ``datasets.builder.Key`` where it exists (4.5+ counts rows per source shard with it), else a
    plain tuple (older versions do not read it beyond ordering and uniqueness).
    """
    return (shard, batch) if _Key is None else _Key(shard, batch)


def skip_lock_files_for(package_dir: Path) -> None:
    """Take no modules-cache lock for builders defined in ``package_dir`` (``datasets`` < 4; idempotent)."""
    from datasets import streaming

    original = getattr(streaming, "lock_importable_file", None)  # absent from datasets >= 4
    if original is None or getattr(original, "_gmai_hf", False):
        return

    @functools.wraps(original)
    def lock_importable_file(importable_local_file: str) -> Any:
        if Path(importable_local_file).resolve().parent == package_dir:
            return contextlib.nullcontext()
        return original(importable_local_file)

    lock_importable_file._gmai_hf = True  # type: ignore[attr-defined]
    streaming.lock_importable_file = lock_importable_file
