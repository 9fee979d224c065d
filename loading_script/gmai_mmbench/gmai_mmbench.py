"""GMAI-MMBench loading script (``datasets`` < 4 and the Hub), delegating to ``gmai_hf.builder``.

The builder lives in the ``gmai_hf`` package (``pip install gmai-hf``), the single source of
truth; this file only exposes it under the loading-script convention. With ``datasets`` >= 4,
``import gmai_hf`` and ``load_dataset("gmai_mmbench", ...)`` instead.
"""

from __future__ import annotations

from gmai_hf.builder import GmaiMMBench as _GmaiMMBench


class GmaiMmbench(_GmaiMMBench):
    """GMAI-MMBench (``gmai_hf.builder.GmaiMMBench``), defined here so loaders find it in this module."""
