"""gmai-hf: GMAI-MMBench as a first-class Hugging Face dataset, metric and evaluation runner."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

#: Folder of the bundled synthetic sample (official file format, made-up questions and images).
SAMPLE_DIR: Path = Path(__file__).parent / "sample"


def _metric_path() -> str:
    installed = Path(__file__).parent / "metric" / "gmai_mmbench.py"  # a wheel install
    if installed.is_file():
        return str(installed)
    return str(Path(__file__).resolve().parent.parent / "metrics" / "gmai_mmbench" / "gmai_mmbench.py")


#: The ``evaluate`` metric script, wherever you are: ``evaluate.load(gmai_hf.METRIC_PATH)``.
METRIC_PATH: str = _metric_path()

# Importing the package registers the ``gmai_mmbench`` dataset builder with ``datasets``.
from gmai_hf.builder import load_split  # noqa: E402
from gmai_hf.builder import register as _register  # noqa: E402

_register()

__all__ = ["METRIC_PATH", "SAMPLE_DIR", "__version__", "load_split"]
