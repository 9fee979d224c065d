"""GMAI-MMBench loading script for ``datasets`` 3.x, delegating to ``gmai_hf.builder``.

``load_dataset("path/to/this/folder", data_dir=..., trust_remote_code=True)`` with ``datasets``
3.0-3.6 (``pip install gmai-hf`` first: the builder lives in the ``gmai_hf`` package, the single
source of truth; this file only exposes it under the loading-script convention, and gives the same
rows, features and errors as ``load_dataset("gmai_mmbench")``). ``datasets`` >= 4 runs no loading
scripts: ``import gmai_hf`` and ``load_dataset("gmai_mmbench", ...)`` instead (that works with 3.x
too). On the Hub, the Parquet export is the form every version loads without code.
"""

from __future__ import annotations

from gmai_hf.builder import GmaiMMBench as _GmaiMMBench


class GmaiMmbench(_GmaiMMBench):
    """GMAI-MMBench (``gmai_hf.builder.GmaiMMBench``), defined here so loaders find it in this module."""
