"""Writing output files safely: whole or not at all, never through a planted symlink.

Every file gmai-hf writes for a person to read (results, predictions, reports, the
submission) goes through :func:`atomic_output`: the content is written inside a fresh private
temporary folder beside the target (``mkdtemp``: a new name, mode 0700, so nothing can have been
planted there) and renamed over the target, so a crash or a full disk never leaves half a file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` on success."""
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp = folder / path.name
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike[str], newline: str | None = None) -> Iterator[TextIO]:
    """A text file (UTF-8) whose content replaces ``path`` when the block ends without error."""
    with atomic_output(path) as tmp, open(tmp, "x", encoding="utf-8", newline=newline) as handle:
        yield handle


def write_atomic(path: str | os.PathLike[str], content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    with atomic_output(path) as tmp, open(tmp, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return path
