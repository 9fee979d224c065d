"""A real OpenAI-compatible server on loopback for tests and benchmarks: ``transformers serve``.

It serves one of the tiny models of :mod:`gmai_hf.testing.models` from its folder (the
``transformers[serving]`` extra), pinned: requests name the model by that folder's path.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server: where to send requests, and the model name it answers to."""

    process: subprocess.Popen[bytes]
    port: int
    model: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _command() -> list[str]:
    script = Path(sys.executable).with_name("transformers")
    if script.exists():
        return [str(script)]
    found = shutil.which("transformers")
    if found is None:
        raise RuntimeError("`transformers serve` is not installed: pip install 'transformers[serving]'")
    return [found]


@contextmanager
def serve(
    model_dir: str | Path,
    log: str | Path,
    ready_timeout_s: float = 180.0,
    device: str = "cpu",
    extra_args: Sequence[str] = (),
) -> Iterator[Server]:
    """``transformers serve MODEL_DIR`` on 127.0.0.1 (offline), ready when yielded; stopped after.

    ``extra_args`` go to the server as they are (the GPU benchmark adds ``--continuous-batching``).
    """
    port = free_port()
    model = str(model_dir)
    command = [*_command(), "serve", model, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--device", device, "--log-level", "error", *extra_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = Path(log)
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"transformers serve exited with {process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"transformers serve was not ready within {ready_timeout_s:.0f} s; see {log}"
                )
            time.sleep(0.1)
        yield Server(process, port, model, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
