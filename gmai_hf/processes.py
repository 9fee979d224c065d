"""How the processes of one run coordinate: an output-folder lock, heartbeats, markers, a watchdog.

Collective operations (``torch.distributed``) are used only once, right after start-up, to
hand every process the launch's token; they time out in :func:`startup_timeout_s`. Everything
that may take long (preparing the dataset, answering, waiting for the others) coordinates
through files in ``OUT/shards`` instead, so a dead or stuck process is noticed within seconds
and never leaves the others hanging in a collective:

- :class:`OutputLock`: one launch at a time per output folder (an ``flock`` held by the main
  process for the whole run; the kernel drops it when the process dies, so a killed run never
  leaves a stale lock);
- :class:`Heartbeat`: every process touches its heartbeat file every second, and exits at once
  if its launcher (``accelerate launch``, ``torchrun``) has died and left it an orphan;
- :class:`Peers`: ``done-*`` / ``failed-*`` markers and heartbeat ages, read by the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from gmai_hf.files import naming

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0
#: A process whose heartbeat is older than this (and not done) is taken as dead.
HEARTBEAT_TIMEOUT_S = float(os.environ.get("GMAI_HF_HEARTBEAT_TIMEOUT", "15"))
#: How long (seconds) the start-up collectives may wait for every process; GMAI_HF_STARTUP_TIMEOUT
#: overrides it (e.g. on a cluster whose nodes start far apart).
STARTUP_TIMEOUT_ENV = "GMAI_HF_STARTUP_TIMEOUT"
DEFAULT_STARTUP_TIMEOUT_S = 30.0


def startup_timeout_s() -> float:
    """The start-up collectives' timeout: :data:`STARTUP_TIMEOUT_ENV`, else 30 s."""
    return float(os.environ.get(STARTUP_TIMEOUT_ENV, DEFAULT_STARTUP_TIMEOUT_S))


#: Exit status of a process whose launcher died.
ORPHAN_EXIT = 3
LOCK_FILE = ".gmai-hf.lock"
TOKEN_BYTES = 16


class OutputLocked(RuntimeError):
    """Another launch is writing to the same output folder."""


class PeerFailure(RuntimeError):
    """Another process of the run failed or stopped answering."""


class StartupTimeout(RuntimeError):
    """The processes of a launch did not all reach start-up in time."""


def shard_name(kind: str, rank: int, processes: int, suffix: str = "") -> str:
    return f"{kind}-{rank}-of-{processes}{suffix}"


class OutputLock:
    """An exclusive lock on an output folder, held by the main process of one launch (the lock
    file ``name`` in ``folder``; ``target``: the folder it guards, when the lock lies beside it)."""

    def __init__(self, folder: Path, name: str = LOCK_FILE, target: Path | None = None) -> None:
        self.path = Path(folder) / name
        self.target = Path(target) if target is not None else Path(folder)
        self._handle: Any = None

    def acquire(self, what: str = "run") -> OutputLock:
        """Take the lock or raise :class:`OutputLocked` naming the holder (pid, host, since when)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, said once
            logger.warning("no file locking on this platform: do not run two launches into one --output-dir")
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = self.path.open("a+", encoding="utf-8")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip()
                handle.close()
                raise OutputLocked(
                    f"{self.target} is in use by another {what} ({_holder(holder)}): wait for it to "
                    "finish, stop it, or use another --output-dir"
                ) from None
            if self._is_current(handle):
                break
            handle.close()  # its holder released and removed it between our open and flock: again
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
        )
        handle.flush()
        self._handle = handle
        _HELD.add(self)
        return self

    def _is_current(self, handle: Any) -> bool:
        """Whether ``handle`` is still the file at :attr:`path` (a released lock's file is removed)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Drop the lock and remove its file (while still holding it: no one can take a stale one)."""
        if self._handle is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._handle.close()  # closing the file drops the flock
            self._handle = None
            _HELD.discard(self)


#: The locks this process holds (a forked child closes its copies: :func:`become_worker`).
_HELD: set[OutputLock] = set()


def become_worker() -> None:
    """In a forked helper process (a DataLoader worker): die with the parent, and hold no copy of
    its output-folder lock, so a killed run's lock is free the moment its main process is gone."""
    for lock in list(_HELD):
        if lock._handle is not None:
            lock._handle.close()  # this process's copy only: the parent's still holds the flock
            lock._handle = None
    _HELD.clear()
    parent = os.getppid()
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us when the parent dies
    except (OSError, AttributeError):  # not Linux: DataLoader's own watchdog ends us, later
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(ORPHAN_EXIT)


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, running since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


def launched_by_launcher() -> bool:
    """Whether this process was started by ``torchrun``/``accelerate launch`` (so its parent is one)."""
    return "LOCAL_RANK" in os.environ or "ACCELERATE_USE_CPU" in os.environ


class Heartbeat:
    """A daemon thread: touch this process's heartbeat file every second, and exit the process
    within a second if its launcher died (an orphan must not run on and collide with a rerun)."""

    def __init__(self) -> None:
        self.path: Path | None = None  # set by start(path): beating starts before the folder exists
        self.parent = os.getppid()
        self.watch_parent = launched_by_launcher()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gmai-hf-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            if self.watch_parent and os.getppid() != self.parent:
                logger.error("the launcher of this process (pid %d) is gone; exiting", self.parent)
                os._exit(ORPHAN_EXIT)
            if self.path is not None:
                # a full disk or a removed folder: the owner finds out when it writes
                with contextlib.suppress(OSError):
                    self.path.touch()
            self._stop.wait(HEARTBEAT_INTERVAL_S)

    def start(self, path: Path | None = None) -> Heartbeat:
        """Start beating (or, once started, beat into ``path`` from now on)."""
        if path is not None:
            path.touch()
            self.path = path
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class Peers:
    """This process's view of the others of its launch, through their files in ``shards_dir``."""

    def __init__(self, shards_dir: Path, rank: int, processes: int) -> None:
        self.dir = shards_dir
        self.rank = rank
        self.processes = processes
        self.since = time.time()  # heartbeats are only expected from this moment on

    def path(self, kind: str, rank: int | None = None) -> Path:
        return self.dir / shard_name(kind, self.rank if rank is None else rank, self.processes)

    def clear_markers(self) -> None:
        """Remove every ``done``/``failed`` marker a previous launch left (main process, under the lock)."""
        for pattern in ("done-*", "failed-*"):
            for path in self.dir.glob(pattern):
                path.unlink(missing_ok=True)

    def mark(self, kind: str, text: str = "") -> None:
        path = self.path(kind)
        with naming(path):
            path.write_text(text, encoding="utf-8")

    def check(self, ranks: range | None = None) -> list[int]:
        """Ranks done so far; raises :class:`PeerFailure` if one failed or went silent."""
        done = []
        now = time.time()
        for rank in ranks if ranks is not None else range(self.processes):
            if rank == self.rank:
                continue
            if self.path("done", rank).exists():
                done.append(rank)
                continue
            failed = self.path("failed", rank)
            if failed.exists():
                reason = failed.read_text(encoding="utf-8").strip().splitlines()
                raise PeerFailure(
                    f"process {rank} of {self.processes} failed: {reason[-1] if reason else '?'}"
                )
            try:
                beat = self.path("heartbeat", rank).stat().st_mtime
            except FileNotFoundError:
                beat = 0.0
            age = now - max(beat, self.since)
            if age > HEARTBEAT_TIMEOUT_S:
                raise PeerFailure(
                    f"process {rank} of {self.processes} stopped answering (no heartbeat for "
                    f"{age:.0f} s; killed or out of memory?)"
                )
        return done

    def wait_for(self, path: Path, accept: Any, rank: int = 0) -> Any:
        """Poll until ``accept(path)`` returns a value (not None), checking ``rank`` stays alive."""
        while True:
            value = accept(path) if path.exists() else None
            if value is not None:
                return value
            self.check(range(rank, rank + 1))
            time.sleep(0.1)


def new_token() -> str:
    """A random id for one launch (written into its plan and markers)."""
    return secrets.token_hex(TOKEN_BYTES)


def share_token(state: Any, token: str | None) -> str | None:
    """The main process's ``token`` on every process (None: the main process could not start).

    The launch's one collective, right after start-up; it fails after :func:`startup_timeout_s`
    with :class:`StartupTimeout` instead of waiting for hours.
    """
    if state.num_processes == 1:
        return token
    import torch
    import torch.distributed as dist

    tensor = torch.zeros(TOKEN_BYTES, dtype=torch.uint8, device=state.device)
    if state.is_main_process and token is not None:
        tensor.copy_(torch.tensor(list(bytes.fromhex(token)), dtype=torch.uint8))
    try:
        dist.broadcast(tensor, src=0)
    except Exception as error:  # gloo and NCCL raise different types for a timeout
        raise StartupTimeout(
            f"process {state.process_index} of {state.num_processes}: the other processes of this launch did "
            f"not all start within {startup_timeout_s():.0f} s ({type(error).__name__}); one of them failed "
            "early or the nodes cannot reach each other: read the launcher's output above, then rerun "
            f"({STARTUP_TIMEOUT_ENV} raises the limit)"
        ) from None
    value = bytes(tensor.cpu().tolist())
    return None if not any(value) else value.hex()
