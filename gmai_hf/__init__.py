"""gmai-hf: GMAI-MMBench as a first-class Hugging Face dataset, metric and evaluation runner."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

#: Folder of the bundled synthetic sample (official file format, made-up questions and images).
SAMPLE_DIR: Path = Path(__file__).parent / "sample"

# Importing the package registers the ``gmai_mmbench`` dataset builder with ``datasets``.
from gmai_hf.builder import load_split  # noqa: E402
from gmai_hf.builder import register as _register  # noqa: E402

_register()

__all__ = ["SAMPLE_DIR", "__version__", "load_split"]
