"""Writing output files safely: whole or not at all, never through a planted symlink.

Every file gmai-hf writes for a person to read (results, predictions, reports, the
submission) goes through :func:`atomic_output`: the content is written inside a fresh private
temporary folder beside the target (``mkdtemp``: a new name, mode 0700, so nothing can have been
planted there) and renamed over the target, so a crash or a full disk never leaves half a file.
A full disk's ``OSError`` names no file of its own: :func:`naming` adds the path written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

#: The errors of a full disk (or quota): raised by a write, they carry no file name.
DISK_FULL: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Errors of a full disk inside the block name ``path`` and say what to do (one line)."""
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL or error.filename is not None:
            raise
        raise OSError(
            error.errno,
            f"{error.strerror} writing {path}: free space on that disk (or write elsewhere) and rerun",
        ) from error


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` on success."""
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp = folder / path.name
        with naming(path):
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


class VerdictMemory:
    """Verdicts about files (an md5, a sha256) remembered across runs in one JSON file under
    ``$HF_HOME/gmai_hf/``, each keyed by the file's resolved path and stamped with its size and
    mtime: hashing a many-GB file again is needed only when it changed."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def path(self) -> Path:
        from huggingface_hub import constants

        return Path(constants.HF_HOME) / "gmai_hf" / self.name

    @staticmethod
    def _key(path: Path) -> tuple[str, str]:
        stat = path.stat()
        return str(path.resolve()), f"{stat.st_size}:{stat.st_mtime_ns}"

    def _load(self) -> dict[str, dict[str, object]]:
        import json

        try:
            memory = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return memory if isinstance(memory, dict) else {}

    def recall(self, path: str | os.PathLike[str]) -> dict[str, object] | None:
        """What was recorded about ``path`` as it is now (None: never, or it changed since)."""
        key, stamp = self._key(Path(path))
        entry = self._load().get(key)
        return entry if isinstance(entry, dict) and entry.get("stamp") == stamp else None

    def remember(self, path: str | os.PathLike[str], **verdict: object) -> None:
        """Record ``verdict`` about ``path`` as it is now; a read-only home only costs a recheck."""
        import json
        import logging

        key, stamp = self._key(Path(path))
        memory = self._load()
        memory[key] = {"stamp": stamp, **verdict}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(memory, indent=1))
        except OSError as error:
            logging.getLogger(__name__).warning("could not remember the check of %s: %s", path, error)
