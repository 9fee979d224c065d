"""Shard, batch, resume: evaluate a backend on GMAI-MMBench across any number of processes.

How work is never lost or done twice:

* Each process appends its answers to its own file ``OUT/shards/answers-<rank>-of-<n>.jsonl``,
  flushed after every batch. At start every process reads *all* answer files (whatever process
  count wrote them; a line cut off by a kill is ignored), and the questions not yet answered are
  split into length-grouped batches dealt round-robin to the processes: disjoint shares that
  together cover every pending question exactly once, for any process count.
* The only collective operations are at start-up (dataset preparation, one barrier after reading
  the answer files). During the loop processes talk through files: each touches a heartbeat file
  every second and writes a ``failed-*`` marker when it fails, so the others stop with a non-zero
  exit within seconds instead of hanging in a collective. At the end each writes a ``done-*``
  marker; the main process waits for all, reads every answer file, scores and writes the outputs.
* Preparation (image decoding, processor) runs in DataLoader workers; a question that cannot be
  prepared (undecodable image, prompt too long) is recorded with its error; an out-of-memory
  error halves the batch and retries.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gmai_hf import prompts, schema
from gmai_hf.backends import Backend, Prepared, Question, QuestionError, load_backend

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("generate", "likelihood")
SHARDS_DIR = "shards"
CONFIG_FILE = "config.json"
HEARTBEAT_INTERVAL_S = 1.0
#: A process whose heartbeat is older than this (and not done) is taken as dead.
HEARTBEAT_TIMEOUT_S = float(os.environ.get("GMAI_HF_HEARTBEAT_TIMEOUT", "15"))
#: Test hook: ``N`` (or ``N@RANK``) kills the process(es) with SIGKILL after N batches written.
KILL_AFTER_ENV = "GMAI_HF_TEST_KILL_AFTER_BATCHES"
#: Settings that must match for answers already on disk to be reused.
RESUME_KEYS: tuple[str, ...] = (
    "model",
    "split",
    "selection",
    "limit",
    "mode",
    "prompt",
    "max_new_tokens",
    "dtype",
    "seed",
)


@dataclass
class RunConfig:
    """Everything a run depends on (the command-line flags)."""

    model: str
    output_dir: Path
    data_dir: str | None = None
    split: str = "validation"
    selection: dict[str, list[str]] = field(default_factory=dict)
    limit: int | None = None
    batch_size: int = 8
    max_new_tokens: int = 32
    mode: str = "generate"
    prompt: str = "vlmevalkit"
    dtype: str = "auto"
    seed: int = 0
    trust_remote_code: bool = False
    num_workers: int | None = None
    matching: str = "vlmevalkit"

    def validate(self) -> None:
        checks = [
            (
                self.split in schema.SPLITS,
                f"--split {self.split!r}: choose one of {', '.join(schema.SPLITS)}",
            ),
            (self.mode in MODES, f"--mode {self.mode!r}: choose one of {', '.join(MODES)}"),
            (
                self.prompt in prompts.PROMPT_STYLES,
                f"--prompt {self.prompt!r}: choose one of {', '.join(prompts.PROMPT_STYLES)}",
            ),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.max_new_tokens >= 1, f"--max-new-tokens must be at least 1, got {self.max_new_tokens}"),
            (self.limit is None or self.limit >= 1, f"--limit must be at least 1, got {self.limit}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def resume_key(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: values[key] for key in RESUME_KEYS}


class PeerFailure(RuntimeError):
    """Another process of the run failed or stopped answering."""


# --- Answer files ------------------------------------------------------------------------------


def shard_name(kind: str, rank: int, processes: int, suffix: str = "") -> str:
    return f"{kind}-{rank}-of-{processes}{suffix}"


def read_answers(shards_dir: Path) -> dict[int, dict[str, Any]]:
    """Every answer in every ``answers-*.jsonl`` (from any process count), by question index.

    Lines that are not valid JSON are skipped: a process killed mid-write leaves a cut last line.
    """
    answers: dict[int, dict[str, Any]] = {}
    for path in sorted(shards_dir.glob("answers-*.jsonl")):
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    answer = json.loads(line)
                    index = int(answer["index"])
                except (ValueError, KeyError, TypeError):
                    if line.strip():
                        logger.warning(
                            "%s, line %d: incomplete answer ignored (will be redone)", path, number
                        )
                    continue
                answers.setdefault(index, answer)
    return answers


def repair_tail(path: Path) -> None:
    """Cut a partial last line (a kill mid-write) so that appending starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: removing an incomplete last line (%d bytes)", path, len(data) - keep)
        with path.open("r+b") as handle:
            handle.truncate(keep)


def check_resume_config(shards_dir: Path, config: RunConfig) -> None:
    """Refuse to mix answers of different settings in one output folder."""
    path = shards_dir / CONFIG_FILE
    answered = any(answers.stat().st_size for answers in shards_dir.glob("answers-*.jsonl"))
    if not path.exists() or not answered:  # nothing to mix up (e.g. the model failed to load)
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    wanted = json.loads(json.dumps(config.resume_key()))
    diff = {k: (saved.get(k), wanted[k]) for k in RESUME_KEYS if saved.get(k) != wanted[k]}
    if diff:
        details = "; ".join(f"{k}: was {old!r}, now {new!r}" for k, (old, new) in diff.items())
        raise ValueError(
            f"{config.output_dir} holds answers of a run with other settings ({details}): rerun with the "
            f"same settings to resume, or use another --output-dir (or delete {shards_dir})"
        )


def plan_batches(lengths: Mapping[int, int], batch_size: int) -> list[list[int]]:
    """Positions grouped into batches of similar prompt length, longest first (so an
    out-of-memory error shows up at once, not hours in)."""
    order = sorted(lengths, key=lambda pos: (-lengths[pos], pos))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def shard(batches: Sequence[list[int]], rank: int, processes: int) -> list[list[int]]:
    """This process's batches: round-robin, so shares are disjoint and differ by one batch at most."""
    return list(batches[rank::processes])


# --- Preparation (DataLoader workers) ----------------------------------------------------------


@dataclass
class Failed:
    """A question that could not be prepared, with the reason."""

    index: int
    error: str


def decode_image(value: Mapping[str, Any] | None, index: int) -> Any:
    """Fully decode a stored image (``datasets.Image(decode=False)`` value) to RGB."""
    from PIL import Image

    if value is None or (value.get("bytes") is None and not value.get("path")):
        raise QuestionError(f"question {index} has no image")
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        with Image.open(source) as image:
            image.load()
            return image.convert("RGB")
    except Exception as error:
        raise QuestionError(
            f"image of question {index} cannot be decoded ({type(error).__name__}: {error}); "
            "the data file may be damaged: re-download or re-export it"
        ) from error


class QuestionDataset:
    """Map-style dataset: position -> prepared question (or :class:`Failed`), run in workers."""

    def __init__(
        self, ds: Any, prompt_style: str, preparer: Callable[[Question], Prepared], needs_image: bool
    ) -> None:
        self.ds = ds
        self.prompt_style = prompt_style
        self.preparer = preparer
        self.needs_image = needs_image

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, position: int) -> Prepared | Failed:
        row = self.ds[position]
        index = int(row["index"])
        try:
            image = decode_image(row.get("image"), index) if self.needs_image else None
            question = Question(
                index=index,
                prompt=prompts.build_prompt(row, self.prompt_style),
                options=prompts.present_options(row),
                image=image,
            )
            return self.preparer(question)
        except QuestionError as error:
            return Failed(index, str(error))


def _collate(items: list[Any]) -> list[Any]:
    return items


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)


# --- Coordination through files ----------------------------------------------------------------


class Heartbeat:
    """Touch a file every second from a daemon thread, so peers can tell this process is alive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gmai-hf-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            self.path.touch()
            self._stop.wait(HEARTBEAT_INTERVAL_S)

    def __enter__(self) -> Heartbeat:
        self.path.touch()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class Peers:
    """This process's view of the others, through their marker files."""

    def __init__(self, shards_dir: Path, rank: int, processes: int) -> None:
        self.dir = shards_dir
        self.rank = rank
        self.processes = processes

    def path(self, kind: str, rank: int | None = None) -> Path:
        return self.dir / shard_name(kind, self.rank if rank is None else rank, self.processes)

    def clear_own(self) -> None:
        for kind in ("done", "failed", "heartbeat"):
            self.path(kind).unlink(missing_ok=True)

    def mark(self, kind: str, text: str = "") -> None:
        self.path(kind).write_text(text, encoding="utf-8")

    def check(self) -> list[int]:
        """Ranks done so far; raises :class:`PeerFailure` if one failed or went silent."""
        done = []
        now = time.time()
        for rank in range(self.processes):
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
            heartbeat = self.path("heartbeat", rank)
            try:
                age = now - heartbeat.stat().st_mtime
            except FileNotFoundError:
                age = float("inf")
            if age > HEARTBEAT_TIMEOUT_S:
                raise PeerFailure(
                    f"process {rank} of {self.processes} stopped answering (no heartbeat for "
                    f"{min(age, 1e9):.0f} s; killed or out of memory?)"
                )
        return done


class Progress:
    """Main-process progress bar over all processes' answer files (questions/s of all together)."""

    def __init__(self, paths: Sequence[Path], total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.paths = paths
        self.offsets = {path: path.stat().st_size if path.exists() else 0 for path in paths}
        self.bar = tqdm(total=total, unit="q", desc="GMAI-MMBench", disable=not enabled, dynamic_ncols=True)

    def poll(self) -> None:
        new = 0
        for path in self.paths:
            try:
                with path.open("rb") as handle:
                    handle.seek(self.offsets[path])
                    data = handle.read()
            except FileNotFoundError:
                continue
            complete = data.rfind(b"\n") + 1
            new += data.count(b"\n", 0, complete)
            self.offsets[path] += complete
        if new:
            self.bar.update(new)

    def close(self) -> None:
        self.poll()
        self.bar.close()


def _kill_after(rank: int) -> int | None:
    """Batches after which the test hook kills this process (None: never)."""
    value = os.environ.get(KILL_AFTER_ENV)
    if not value:
        return None
    count, _, only = value.partition("@")
    if only and int(only) != rank:
        return None
    return int(count)


# --- The run -----------------------------------------------------------------------------------


def load_questions(config: RunConfig) -> Any:
    """The selected questions of the split, as a ``datasets.Dataset`` (images not decoded)."""
    import datasets

    from gmai_hf import tree
    from gmai_hf.builder import load_split

    ds = load_split(config.split, config.data_dir)
    if config.selection:
        ds = tree.select(ds, **config.selection)
    if config.limit is not None:
        ds = ds.select(range(min(config.limit, len(ds))))
    if not len(ds):
        raise ValueError("the selection holds no question: widen the selection flags")
    return ds.cast_column("image", datasets.Image(decode=False))


class Runner:
    """One process's part of a run (``run`` creates one per process)."""

    def __init__(self, config: RunConfig, state: Any) -> None:
        self.config = config
        self.state = state
        self.rank = state.process_index
        self.processes = state.num_processes
        self.shards_dir = Path(config.output_dir) / SHARDS_DIR
        self.peers = Peers(self.shards_dir, self.rank, self.processes)
        self.answers_path = self.shards_dir / shard_name("answers", self.rank, self.processes, ".jsonl")
        self.batch_limit = config.batch_size
        self.backend_info: dict[str, Any] | None = None
        self.answer_started: float | None = None  # when this process's model was ready

    def answer_batch(self, backend: Backend, items: Sequence[Prepared]) -> list[str | None]:
        """Answers for ``items``, in chunks of at most ``batch_limit``, halving it (for the rest of
        the run) on out-of-memory; None for a question that does not fit in memory even alone."""
        answers: list[str | None] = []
        start = 0
        while start < len(items):
            chunk = items[start : start + self.batch_limit]
            try:
                if self.config.mode == "likelihood":
                    answers += backend.score_letters(chunk)
                else:
                    answers += backend.generate(chunk, self.config.max_new_tokens)
            except Exception as error:
                if not backend.is_out_of_memory(error):
                    raise
                if len(chunk) == 1:
                    answers.append(None)
                else:
                    self.batch_limit = (len(chunk) + 1) // 2
                    logger.warning(
                        "out of memory with %d questions; now %d at a time", len(chunk), self.batch_limit
                    )
                    continue
            start += len(chunk)
        return answers

    def run(self) -> int:
        config, state = self.config, self.state
        started = time.time()
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        check_resume_config(self.shards_dir, config)
        with state.main_process_first():
            ds = load_questions(config)
        meta = ds.remove_columns("image")
        rows = meta.to_list()
        self.peers.clear_own()
        repair_tail(self.answers_path)
        answered = read_answers(self.shards_dir)
        pending = {pos: row for pos, row in enumerate(rows) if int(row["index"]) not in answered}
        if state.is_main_process and not answered:
            (self.shards_dir / CONFIG_FILE).write_text(
                json.dumps(config.resume_key(), indent=2), encoding="utf-8"
            )
        progress = Progress(
            [
                self.shards_dir / shard_name("answers", r, self.processes, ".jsonl")
                for r in range(self.processes)
            ],
            total=len(pending),
            enabled=state.is_main_process,
        )
        with Heartbeat(self.peers.path("heartbeat")):
            state.wait_for_everyone()  # every process has read the same answers: shares agree
            loop_started = time.time()
            if state.is_main_process:
                logger.info(
                    "%d questions selected, %d already answered, %d to answer over %d process(es)",
                    len(rows),
                    len(rows) - len(pending),
                    len(pending),
                    self.processes,
                )
            lengths = {pos: len(prompts.build_prompt(row, config.prompt)) for pos, row in pending.items()}
            batches = shard(plan_batches(lengths, config.batch_size), self.rank, self.processes)
            try:
                if batches:
                    self._answer_all(ds, batches, progress)
                self.peers.mark("done")
                if not state.is_main_process:
                    return 0
                self._wait_for_peers(progress)
            except PeerFailure as error:
                logger.error("%s; stopping. Rerun the same command to resume.", error)
                return 1
            except BaseException as error:
                self.peers.mark("failed", f"{type(error).__name__}: {error}")
                raise
            finally:
                progress.close()
            loop_time = time.time() - (self.answer_started or loop_started)
        return self._finish(rows, started, loop_time, len(rows) - len(pending), len(pending))

    def _answer_all(self, ds: Any, batches: list[list[int]], progress: Progress) -> None:
        import torch

        config = self.config
        backend = load_backend(
            config.model,
            self.state.device,
            dtype=config.dtype,
            seed=config.seed,
            trust_remote_code=config.trust_remote_code,
            reserved_tokens=config.max_new_tokens if config.mode == "generate" else 1,
        )
        self.backend_info = backend.describe()
        self.answer_started = time.time()
        workers = config.num_workers
        if workers is None:
            workers = min(4, max(1, (os.cpu_count() or 1) // self.processes)) if backend.needs_image else 0
        loader = torch.utils.data.DataLoader(
            QuestionDataset(ds, config.prompt, backend.preparer(), backend.needs_image),
            batch_sampler=batches,
            collate_fn=_collate,
            num_workers=max(0, workers),
            worker_init_fn=_worker_init if workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
        )
        kill_after = _kill_after(self.rank)
        with self.answers_path.open("a", encoding="utf-8") as out:
            for number, batch in enumerate(loader, 1):
                self.peers.check()
                ready = [item for item in batch if isinstance(item, Prepared)]
                texts = self.answer_batch(backend, ready) if ready else []
                lines = [
                    {"index": item.index, "prediction": text, "error": None}
                    for item, text in zip(ready, texts, strict=True)
                    if text is not None
                ]
                failures = [item for item in batch if isinstance(item, Failed)]
                failures += [
                    Failed(item.index, f"question {item.index} does not fit in memory even alone")
                    for item, text in zip(ready, texts, strict=True)
                    if text is None
                ]
                for failed in failures:
                    logger.warning("%s", failed.error)
                    lines.append({"index": failed.index, "prediction": "", "error": failed.error})
                out.write("".join(json.dumps(line) + "\n" for line in lines))
                out.flush()
                progress.poll()
                if kill_after is not None and number >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)

    def _wait_for_peers(self, progress: Progress) -> None:
        while len(self.peers.check()) < self.processes - 1:
            progress.poll()
            time.sleep(0.2)

    def _finish(
        self, rows: list[dict[str, Any]], started: float, loop_time: float, resumed: int, new: int
    ) -> int:
        from gmai_hf import results

        config = self.config
        answers = read_answers(self.shards_dir)
        missing = [int(row["index"]) for row in rows if int(row["index"]) not in answers]
        if missing:
            raise RuntimeError(
                f"{len(missing)} selected questions have no answer in {self.shards_dir} "
                f"(first: {missing[:5]}); rerun the same command to answer them"
            )
        predictions = {i: a["prediction"] for i, a in answers.items() if not a.get("error")}
        errors = {i: a["error"] for i, a in answers.items() if a.get("error")}
        records = results.build_records(rows, predictions, errors, matching=config.matching)
        failed = sum(r["error"] is not None for r in records)
        run_info = {
            **config.resume_key(),
            "data_dir": config.data_dir,
            "processes": self.processes,
            "batch_size": config.batch_size,
            "matching": config.matching,
            "questions": len(rows),
            "answered_now": new,
            "resumed": resumed,
            "failed": failed,
            "wall_time_s": round(time.time() - started, 3),
            "answer_time_s": round(loop_time, 3),
            "questions_per_s": round(new / loop_time, 3) if new and loop_time > 0 else None,
            "backend": self.backend_info,
            "versions": results.library_versions(),
        }
        previous = Path(config.output_dir) / results.RESULTS_FILE
        if not new and previous.exists():  # a finished run rerun: keep the speed of the run that answered
            earlier = json.loads(previous.read_text(encoding="utf-8")).get("run") or {}
            run_info.update({k: earlier.get(k) for k in ("answer_time_s", "questions_per_s", "backend")})
        results.write_outputs(
            config.output_dir, records, run_info, config.split, rows, matching=config.matching
        )
        summary = "no answers (test split)"
        if records and records[0]["answer"] is not None:
            correct = sum(bool(r["hit"]) for r in records)
            summary = f"accuracy {correct / len(records):.2%} ({correct}/{len(records)})"
        logger.info("%s; %d failed; outputs in %s", summary, failed, config.output_dir)
        return 0


def make_state(timeout_s: float = 4 * 3600) -> Any:
    """accelerate's process state; gloo on CPU so ``--multi_gpu`` launches work without GPUs.

    The long timeout covers start-up only (the main process may build the Arrow cache of a
    multi-GB split while the others wait); nothing waits in a collective after that.
    """
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=timeout_s))


def run(config: RunConfig) -> int:
    """Run (or resume) an evaluation in this process; the exit status of the process."""
    config.validate()
    state = make_state()
    return Runner(config, state).run()
