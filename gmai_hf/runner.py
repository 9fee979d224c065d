"""Shard, batch, resume: evaluate a backend on GMAI-MMBench across any number of processes.

How work is never lost, done twice or mixed with another run's:

* One launch at a time per output folder: the main process holds an exclusive lock on it for the
  whole run (:class:`gmai_hf.processes.OutputLock`), and answers are reused only by a run with the
  same settings on the same data and model (:meth:`RunConfig.resume_key`: every setting declared
  as changing answers, the data's files, the model's identity); settings that only choose which
  questions are asked keep the answers given and ask only the missing ones.
* Each process appends every answer to its own file ``OUT/shards/answers-<rank>-of-<n>.jsonl`` as
  soon as it has it. The main process alone reads all answer files (whatever process count wrote
  them), repairs lines cut off by a kill, and writes ``plan.json``: the questions still to answer
  (missing or failed), in batches of similar prompt length dealt round-robin to the processes.
  Every process works from that one snapshot: disjoint shares that together cover every pending
  question exactly once, for any process count.
* The only collective operation hands out the launch's token right after start-up (timeout
  :func:`gmai_hf.processes.startup_timeout_s`); after that processes talk through files
  (:mod:`gmai_hf.processes`), so a dead or stuck process stops the others within seconds.
* Preparation (image decoding, protocol re-encoding, processor) runs in DataLoader workers; a
  question that cannot be prepared is recorded with its error. The backend re-sorts a few
  prepared batches at a time by the processor's token count before answering them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gmai_hf import files, fingerprints, identity, prompts, protocols, schema, vlmevalkit_prompts
from gmai_hf.backends import Failed, Prepared, Question, QuestionError, backend_for, load_backend
from gmai_hf.backends.base import MODES
from gmai_hf.processes import (
    Heartbeat,
    OutputLock,
    PeerFailure,
    Peers,
    new_token,
    shard_name,
    share_token,
)

logger = logging.getLogger(__name__)

SHARDS_DIR = "shards"
CONFIG_FILE = "config.json"
PLAN_FILE = "plan.json"
#: Test hook: ``N`` (or ``N@RANK``) kills the process(es) with SIGKILL after N answers written.
KILL_AFTER_ENV = "GMAI_HF_TEST_KILL_AFTER_ANSWERS"
#: What each setting of a run is for, declared once beside it (``setting(ROLE, ...)``):
#: ``answers``: it can change an answer, so answers on disk are reused only when it is the same
#: (the resume key); ``questions``: it changes only which questions are asked (answers already
#: given are kept, only the missing ones asked); ``run``: how the run goes (speed, placement,
#: where outputs go, how answers are scored afterwards), never what a model answers.
ANSWERS, QUESTIONS, RUN = "answers", "questions", "run"
#: The roles of the ``openai`` backend's options (``backend_options``), declared the same way.
BACKEND_OPTION_ROLES: dict[str, str] = {
    "base_url": ANSWERS,  # another server may serve another model (recorded without credentials)
    "max_image_side": ANSWERS,  # the image the model sees
    "api_key_env": RUN,
    "concurrency": RUN,
    "request_timeout": RUN,
    "max_retries": RUN,
    "max_reply_bytes": RUN,
}


def setting(role: str, default: Any = None, **kwargs: Any) -> Any:
    """A :class:`RunConfig` field with its declared role (``default=MISSING``: a required one)."""
    if "default_factory" not in kwargs and default is not MISSING:
        kwargs["default"] = default
    return field(metadata={"role": role}, **kwargs)


def endpoint(base_url: str | None) -> str:
    """The server a ``base_url`` option means (the default resolved), without its credentials."""
    from gmai_hf.client import redact_url, resolve_base_url

    return redact_url(resolve_base_url(base_url))


@dataclass
class RunConfig:
    """Everything a run depends on (the command-line flags), each with its role (:data:`ANSWERS`...)."""

    model: str = setting(ANSWERS, MISSING)
    output_dir: Path = setting(RUN, MISSING)
    data_dir: str | None = setting(RUN)  # the data itself is identified by data_files
    #: A Parquet export to read instead of TSVs: a Hub dataset repository or a folder.
    dataset: str | None = setting(RUN)
    split: str = setting(ANSWERS, "validation")
    selection: dict[str, list[str]] = setting(QUESTIONS, default_factory=dict)
    limit: int | None = setting(QUESTIONS)
    #: Questions per forward pass per process, or ``"auto"`` (see :func:`initial_batch_size`).
    batch_size: int | str = setting(RUN, 8)
    #: None: what the prompt's VLMEvalKit wrapper sets (set by :meth:`validate`).
    max_new_tokens: int | None = setting(ANSWERS)
    mode: str = setting(ANSWERS, "generate")
    prompt: str = setting(ANSWERS, "vlmevalkit")
    protocol: str = setting(ANSWERS, protocols.DEFAULT_PROTOCOL)
    backend: str = setting(ANSWERS, "transformers")
    dtype: str = setting(ANSWERS, "auto")
    seed: int = setting(ANSWERS, 0)
    trust_remote_code: bool = setting(RUN, False)
    num_workers: int | None = setting(RUN)
    #: ``auto``: one copy of the model spread over this process's GPUs (``--gpus-per-process``).
    device_map: str | None = setting(RUN)
    gpus_per_process: int | None = setting(RUN)
    matching: str = setting(RUN, "vlmevalkit")  # answers are matched again at every finish
    #: Backend options (e.g. the ``openai`` backend's base URL, concurrency, retries); each one's
    #: role is in :data:`BACKEND_OPTION_ROLES`.
    backend_options: dict[str, Any] = setting(RUN, default_factory=dict)
    #: The LLM judge (``model``, ``base_url``, ``api_key_env``) for answers matching cannot read.
    judge: dict[str, Any] | None = setting(RUN)
    #: The checkpoint's ``config.json`` ``model_type`` (set by :meth:`validate`; picks the prompt).
    model_type: str | None = setting(RUN)
    #: Files the split is read from, as ``[[name, bytes], ...]`` (set when the data is loaded).
    data_files: list[list[Any]] | None = setting(ANSWERS)
    #: What the model is, beyond its name (set when a run starts, :func:`model_identity`): a local
    #: folder's file fingerprint, a Hub model's commit, the name a server lists it under.
    model_identity: dict[str, Any] | None = setting(ANSWERS)

    def validate(self) -> None:
        """Refuse impossible settings; resolve the backend as the command line does (``--model
        random`` is the random baseline), so the resume key is the same however the run was started."""
        self.backend = backend_for(self.backend, self.model)
        if self.prompt not in prompts.PROMPT_STYLES and not vlmevalkit_prompts.wrapper_of(self.prompt):
            raise ValueError(
                f"--prompt {self.prompt!r}: choose one of {', '.join(prompts.PROMPT_STYLES)} "
                "or vlmevalkit:<Wrapper>"
            )
        if self.backend == "transformers":
            self.model_type = vlmevalkit_prompts.model_type_of(self.model)
        self.prompt = vlmevalkit_prompts.resolve(self.prompt, self.model_type)
        if self.max_new_tokens is None:
            self.max_new_tokens = vlmevalkit_prompts.rule_for(self.prompt).max_new_tokens
        undeclared = sorted(set(self.backend_options) - set(BACKEND_OPTION_ROLES))
        checks = [
            (not undeclared, f"unknown backend option(s) {undeclared}: declare them in BACKEND_OPTION_ROLES"),
            (
                self.split in schema.SPLITS,
                f"--split {self.split!r}: choose one of {', '.join(schema.SPLITS)}",
            ),
            (self.mode in MODES, f"--mode {self.mode!r}: choose one of {', '.join(MODES)}"),
            (
                self.protocol in protocols.PROTOCOLS,
                f"--protocol {self.protocol!r}: choose one of {', '.join(protocols.PROTOCOLS)}",
            ),
            (
                self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1),
                f"--batch-size must be a number of at least 1 or 'auto', got {self.batch_size!r}",
            ),
            (
                self.backend != "openai" or self.mode == "generate",
                "--mode likelihood needs the model's next-token probabilities, which chat-completions "
                "servers do not give for images: use --mode generate with --backend openai",
            ),
            (
                self.backend == "transformers" or (self.device_map is None and self.gpus_per_process is None),
                "--device-map and --gpus-per-process place a transformers model; "
                f"the {self.backend} backend has none",
            ),
            (
                self.gpus_per_process is None or self.gpus_per_process >= 1,
                f"--gpus-per-process must be at least 1, got {self.gpus_per_process}",
            ),
            (
                self.max_new_tokens is not None and self.max_new_tokens >= 1,
                f"--max-new-tokens must be at least 1, got {self.max_new_tokens}",
            ),
            (self.limit is None or self.limit >= 1, f"--limit must be at least 1, got {self.limit}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def resume_key(self) -> dict[str, Any]:
        """Every setting that can change an answer (role :data:`ANSWERS`), as JSON values; the
        ``openai`` endpoint without credentials."""
        values = asdict(self)
        key = {f.name: values[f.name] for f in fields(self) if f.metadata["role"] == ANSWERS}
        if self.backend == "openai":  # the backend whose options BACKEND_OPTION_ROLES declares
            for name, role in BACKEND_OPTION_ROLES.items():
                if role == ANSWERS:  # absent counts too: dropping --max-image-side changes images
                    value = self.backend_options.get(name)
                    key[name] = endpoint(value) if name == "base_url" else value
        return json.loads(json.dumps(key))

    def record(self) -> dict[str, Any]:
        """What ``results.json["run"]`` says of the settings: the resume key and the selection."""
        chosen = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["role"] == QUESTIONS}
        return {**self.resume_key(), **chosen}


# --- Answer files ------------------------------------------------------------------------------


def read_answers(shards_dir: Path) -> dict[int, dict[str, Any]]:
    """The answer to keep for every question in every ``answers-*.jsonl`` (any process count).

    A successful answer is kept over a failure, and the first of several over later ones (a
    question is never answered twice, but may fail before it succeeds). Lines that are not
    valid JSON are skipped: a process killed mid-write leaves a cut last line.
    """
    answers: dict[int, dict[str, Any]] = {}
    for index, answer in answer_lines(shards_dir):
        kept = answers.get(index)
        if kept is None or (kept.get("error") and not answer.get("error")):
            answers[index] = answer
    return answers


def answer_lines(shards_dir: Path, quiet: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every answer line on disk, failed attempts and superseded ones included, as (index, answer)."""
    for path in sorted(shards_dir.glob("answers-*.jsonl")):
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    answer = json.loads(line)
                    index = int(answer["index"])
                except (ValueError, KeyError, TypeError):
                    if line.strip() and not quiet:
                        logger.warning(
                            "%s, line %d: incomplete answer ignored (will be redone)", path, number
                        )
                    continue
                yield index, answer


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
    """Refuse to mix answers of different settings, or of other data, in one output folder."""
    path = shards_dir / CONFIG_FILE
    answered = any(answers.stat().st_size for answers in shards_dir.glob("answers-*.jsonl"))
    if not answered:  # nothing to mix up (e.g. the model failed to load)
        return
    if not path.exists():
        raise ValueError(
            f"{shards_dir} holds answers but no {CONFIG_FILE} saying which run wrote them: use another "
            f"--output-dir (or delete {shards_dir})"
        )
    saved = json.loads(path.read_text(encoding="utf-8"))
    wanted = config.resume_key()
    # what the key holds now (a setting that no longer changes answers is not compared)
    diff = {k: (saved.get(k), wanted[k]) for k in wanted if saved.get(k) != wanted[k]}
    if diff:
        details = "; ".join(f"{k}: was {_short(old)}, now {_short(new)}" for k, (old, new) in diff.items())
        raise ValueError(
            f"{config.output_dir} holds answers of a run with other settings or data ({details}): rerun with "
            f"the same settings and data to resume, or use another --output-dir (or delete {shards_dir})"
        )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Where ``--batch-size auto`` starts on a GPU; each out-of-memory error halves it for the run.
AUTO_BATCH_START = 64


def initial_batch_size(batch_size: int | str, device: Any) -> int:
    """The batch a run starts with: ``auto`` starts high on a GPU, where running out of memory is a
    clean error that halves it; on the CPU it is never signalled (the machine swaps), so 8."""
    if batch_size != "auto":
        return int(batch_size)
    return AUTO_BATCH_START if str(device).startswith("cuda") else 8


def plan_batches(costs: Mapping[int, int], batch_size: int) -> list[list[int]]:
    """Questions grouped into batches of similar cost (prompt length), largest first (so an
    out-of-memory error shows up at once, not hours in)."""
    order = sorted(costs, key=lambda key: (-costs[key], key))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def shard(batches: Sequence[list[int]], rank: int, processes: int) -> list[list[int]]:
    """This process's batches: round-robin, so shares are disjoint and differ by one batch at most."""
    return list(batches[rank::processes])


# --- Preparation (DataLoader workers) ----------------------------------------------------------


def stored_image(value: Mapping[str, Any] | None, index: int) -> bytes:
    """The bytes of a stored image (a ``datasets.Image(decode=False)`` value)."""
    if value is None or (value.get("bytes") is None and not value.get("path")):
        raise QuestionError(f"question {index} has no image")
    if value.get("bytes") is not None:
        return value["bytes"]
    with open(value["path"], "rb") as handle:
        return handle.read()


class QuestionDataset:
    """Map-style dataset: position -> prepared question (or :class:`Failed`), run in workers."""

    def __init__(
        self,
        ds: Any,
        prompt_style: str,
        protocol: str,
        preparer: Callable[[Question], Prepared],
        needs_image: bool,
    ) -> None:
        self.ds = ds if needs_image else ds.remove_columns("image")
        self.prompt_style = prompt_style
        self.rule = vlmevalkit_prompts.rule_for(prompt_style)
        self.protocol = protocol
        self.preparer = preparer
        self.needs_image = needs_image

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, position: int) -> Prepared | Failed:
        row = protocols.present_row(self.ds[position], self.protocol)
        index = int(row["index"])
        try:
            image = None
            if self.needs_image:
                raw = stored_image(row.get("image"), index)
                try:
                    image = protocols.image_bytes(raw, self.protocol)
                except Exception as error:
                    raise QuestionError(
                        f"image of question {index} cannot be decoded ({type(error).__name__}: {error}); "
                        "the data file may be damaged: re-download or re-export it"
                    ) from error
                try:
                    image = vlmevalkit_prompts.prepare_image(self.prompt_style, image)
                except ValueError as error:  # what the wrapper itself would fail on
                    raise QuestionError(f"image of question {index}: {self.prompt_style}: {error}") from error
            system, prompt = prompts.build_messages(row, self.prompt_style)
            lead = None
            if self.rule.system_before_image:
                lead, system = system, None
            options = prompts.present_options(row)
            question = Question(index, prompt, options, image, system, lead, self.rule.image_detail)
            prepared = self.preparer(question)
            prepared.cost = prepared.cost or len(prompt)
            return prepared
        except QuestionError as error:
            return Failed(index, str(error))


def _collate(items: list[Any]) -> list[Any]:
    return items


def _worker_init(_: int) -> None:
    import signal as signals

    import torch

    from gmai_hf.processes import become_worker

    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group: the main process handles it, workers stay quiet
    signals.signal(signals.SIGINT, signals.SIG_IGN)
    become_worker()


class Progress:
    """Main-process progress bar over all processes' answer files: questions/s of all together,
    with the failed questions and (API backends) the retried requests so far."""

    _RETRIES = re.compile(rb'"retries": (\d+)')

    def __init__(self, paths: Sequence[Path], total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.paths = paths
        self.offsets = {path: path.stat().st_size if path.exists() else 0 for path in paths}
        self.failed = self.retries = 0
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
            self.failed += data.count(b'"error": "', 0, complete)
            self.retries += sum(int(n) for n in self._RETRIES.findall(data, 0, complete))
            self.offsets[path] += complete
        if new:
            shown = {"failed": self.failed, "retries": self.retries}
            self.bar.set_postfix({k: v for k, v in shown.items() if v}, refresh=False)
            self.bar.update(new)

    def close(self) -> None:
        self.poll()
        self.bar.close()


def _kill_after(rank: int) -> int | None:
    """Answers after which the test hook kills this process (None: never)."""
    value = os.environ.get(KILL_AFTER_ENV)
    if not value:
        return None
    count, _, only = value.partition("@")
    if only and int(only) != rank:
        return None
    return int(count)


# --- The run -----------------------------------------------------------------------------------


@dataclass
class Questions:
    """The questions a run answers: the selected rows, and which data they were selected from."""

    ds: Any  # datasets.Dataset, images not decoded
    rows: list[dict[str, Any]]  # metadata rows (no image), as the protocol presents them
    data: dict[str, Any]  # ``identity.describe``: the split's files, size, official or not


def load_questions(config: RunConfig) -> Questions:
    """The selected questions of the split (images not decoded) and what identifies the data."""
    import datasets

    from gmai_hf import tree
    from gmai_hf.builder import load_split

    ds = load_split(config.split, config.data_dir, dataset=config.dataset)
    data = identity.describe(config.split, config.data_dir, len(ds), dataset=config.dataset)
    if config.selection:
        ds = tree.select(ds, **config.selection)
    if config.limit is not None:
        ds = ds.select(range(min(config.limit, len(ds))))
    if not len(ds):
        raise ValueError("the selection holds no question: widen the selection flags")
    rows = [protocols.present_row(row, config.protocol) for row in ds.remove_columns("image").to_list()]
    return Questions(ds.cast_column("image", datasets.Image(decode=False)), rows, data)


class Runner:
    """One process's part of a run (``run`` creates one per process)."""

    def __init__(self, config: RunConfig, state: Any, heartbeat: Heartbeat | None = None) -> None:
        self.config = config
        self.state = state
        self.rank = state.process_index
        self.processes = state.num_processes
        self.shards_dir = Path(config.output_dir) / SHARDS_DIR
        self.peers = Peers(self.shards_dir, self.rank, self.processes)
        self.answers_path = self.shards_dir / shard_name("answers", self.rank, self.processes, ".jsonl")
        self.heartbeat = heartbeat or Heartbeat()
        self.backend_info: dict[str, Any] | None = None
        self.answer_started: float | None = None  # when this process's model was ready

    def run(self) -> int:
        """Take the output folder, share the launch token, then run; the exit status.

        A start that fails before any answer is written (bad data, a model that can't be had)
        removes the output folder it created, so the folder is there only once a run is."""
        created = not Path(self.config.output_dir).exists()
        status = 2
        try:
            status = self._locked_run()
            return status
        finally:
            if created and status == 2 and self.state.is_main_process:
                remove_unanswered(Path(self.config.output_dir))

    def _locked_run(self) -> int:
        state = self.state
        lock, token, refused = None, None, None
        if state.is_main_process:
            try:
                lock = OutputLock(Path(self.config.output_dir)).acquire()
                self.shards_dir.mkdir(parents=True, exist_ok=True)
                self.peers.clear_markers()  # a previous launch's markers, before anyone writes new ones
                token = new_token()
            except Exception as error:  # the others must learn it too, not wait in the broadcast
                refused = error
        token = share_token(state, token)
        try:
            if token is None:
                if refused is not None:
                    raise refused
                return 2  # the main process could not start; it says why
            return self._run(token)
        finally:
            if lock is not None:
                lock.release()

    def _run(self, token: str) -> int:
        config, state = self.config, self.state
        started = time.time()
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        self.peers.since = time.time()
        self.heartbeat.start(self.peers.path("heartbeat"))
        progress = None
        try:
            # every process at once: datasets' file lock lets one prepare the cache, the others wait
            questions = load_questions(config)
            config.data_files = identity.fingerprint(questions.data)
            plan_path = self.shards_dir / PLAN_FILE
            if state.is_main_process:
                plan = self._plan(questions, token)
            else:
                plan = self.peers.wait_for(plan_path, lambda path: _plan_for(path, token))
            progress = Progress(
                [
                    self.shards_dir / shard_name("answers", rank, self.processes, ".jsonl")
                    for rank in range(self.processes)
                ],
                total=plan["pending"],
                enabled=state.is_main_process,
            )
            positions = {int(row["index"]): position for position, row in enumerate(questions.rows)}
            batches = [[positions[index] for index in batch] for batch in plan["shares"][self.rank]]
            loop_started = time.time()
            if batches:
                self._answer_all(questions.ds, batches, progress)
            self.peers.mark("done", token)
            if not state.is_main_process:
                return 0
            self._wait_for_peers(progress)
        except PeerFailure as error:
            if state.is_main_process:
                logger.error("%s; stopping. Rerun the same command to resume.", error)
            return 1
        except BaseException as error:
            self.peers.mark("failed", f"{type(error).__name__}: {error}")
            raise
        finally:
            if progress is not None:
                progress.close()
            self.heartbeat.stop()
        loop_time = time.time() - (self.answer_started or loop_started)
        return self._finish(questions, started, loop_time, plan)

    def _plan(self, questions: Questions, token: str) -> dict[str, Any]:
        """Main process: check the settings, read every answer file once, deal out what is pending."""
        config = self.config
        config.model_identity = model_identity(config)
        check_resume_config(self.shards_dir, config)
        (self.shards_dir / CONFIG_FILE).write_text(
            json.dumps(config.resume_key(), indent=2), encoding="utf-8"
        )
        for path in self.shards_dir.glob("answers-*.jsonl"):
            repair_tail(path)
        answered = read_answers(self.shards_dir)
        costs = {
            int(row["index"]): len(prompts.build_prompt(row, config.prompt))
            for row in questions.rows
            if answered.get(int(row["index"]), {"error": "missing"}).get("error")
        }
        retried = sum(index in answered for index in costs)
        batches = plan_batches(costs, initial_batch_size(config.batch_size, self.state.device))
        plan = {
            "token": token,
            "processes": self.processes,
            "pending": len(costs),
            "shares": [shard(batches, rank, self.processes) for rank in range(self.processes)],
        }
        from gmai_hf.files import write_atomic

        write_atomic(self.shards_dir / PLAN_FILE, json.dumps(plan))
        logger.info(
            "%d questions selected, %d already answered, %d to answer%s over %d process(es)",
            len(questions.rows),
            len(questions.rows) - len(costs),
            len(costs),
            f" ({retried} failed before: retried)" if retried else "",
            self.processes,
        )
        return plan

    def _answer_all(self, ds: Any, batches: list[list[int]], progress: Progress) -> None:
        import torch

        config = self.config
        backend = load_backend(
            config.backend,
            config.model,
            self.state.device,
            dtype=config.dtype,
            seed=config.seed,
            trust_remote_code=config.trust_remote_code,
            options=config.backend_options,
            device_map=config.device_map,
            gpus_per_process=config.gpus_per_process,
        )
        backend.batch_limit = initial_batch_size(config.batch_size, self.state.device)
        rule = vlmevalkit_prompts.rule_for(config.prompt)
        backend.num_beams = rule.num_beams
        if vlmevalkit_prompts.family_of(config.prompt, config.model_type):
            backend.processor_kwargs = dict(rule.processor_kwargs)  # only the family's processor takes them
        self.backend_info = backend.describe()
        self.answer_started = time.time()
        workers = config.num_workers
        if workers is None:
            workers = min(4, max(1, (os.cpu_count() or 1) // self.processes)) if backend.needs_image else 0
        loader = torch.utils.data.DataLoader(
            QuestionDataset(ds, config.prompt, config.protocol, backend.preparer(), backend.needs_image),
            batch_sampler=batches,
            collate_fn=_collate,
            num_workers=max(0, workers),
            worker_init_fn=_worker_init if workers > 0 else None,
        )
        kill_after = _kill_after(self.rank)
        written, checked = 0, time.monotonic()
        failures = FailureLog()
        with files.naming(self.answers_path), self.answers_path.open("a", encoding="utf-8") as out:
            for answer in backend.answers(loader, config.mode, config.max_new_tokens):
                if answer.error:
                    failures.add(answer.error)
                elif rule.answer_rstrip and answer.text:  # what the wrapper itself records
                    answer.text = answer.text.rstrip(rule.answer_rstrip)
                out.write(json.dumps(answer.to_json()) + "\n")
                out.flush()
                written += 1
                if time.monotonic() - checked > 1:
                    self.peers.check()
                    progress.poll()
                    checked = time.monotonic()
                if kill_after is not None and written >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
        self.backend_info = backend.describe()  # with what the engine counted while answering

    def _wait_for_peers(self, progress: Progress) -> None:
        while len(self.peers.check()) < self.processes - 1:
            progress.poll()
            time.sleep(0.2)

    def _finish(self, questions: Questions, started: float, loop_time: float, plan: dict[str, Any]) -> int:
        """Main process: read every answer, match (and judge), score, write outputs and reports."""
        from gmai_hf import results
        from gmai_hf.judge import Judge, judge_settings

        config = self.config
        rows = questions.rows
        answers = read_answers(self.shards_dir)
        missing = [int(row["index"]) for row in rows if int(row["index"]) not in answers]
        if missing:
            raise RuntimeError(
                f"{len(missing)} selected questions have no answer in {self.shards_dir} "
                f"(first: {missing[:5]}); rerun the same command to answer them"
            )
        selected = [answers[int(row["index"])] for row in rows]
        predictions = {int(a["index"]): a["prediction"] for a in selected if not a.get("error")}
        errors = {int(a["index"]): a["error"] for a in selected if a.get("error")}
        retryable = [int(a["index"]) for a in selected if a.get("error") and a.get("retry")]
        if rows and len(errors) == len(rows):
            index, error = next(iter(errors.items()))
            logger.error(
                "every one of the %d questions failed (e.g. question %d: %s); nothing to score, no results "
                "written%s",
                len(rows),
                index,
                error,
                ": rerun the same command to retry them" if retryable else "",
            )
            return 1
        judge = Judge.from_options(config.judge, matching_mode=config.matching)
        content = fingerprints.dataset_fingerprints(questions.ds)
        records = results.build_records(
            rows, predictions, errors, matching=config.matching, judge=judge, fingerprints=content
        )
        new = plan["pending"]
        run_info = {
            **config.record(),
            "data_dir": config.data_dir,
            "dataset": config.dataset,
            "model_type": config.model_type,
            "processes": self.processes,
            "batch_size": config.batch_size,
            "matching": config.matching,
            "judge": judge_settings(config.judge),
            "questions": len(rows),
            "answered_now": new,
            "resumed": len(rows) - new,
            "failed": len(errors),
            "truncated": sum(bool(a.get("truncated")) for a in selected),
            "wall_time_s": round(time.time() - started, 3),
            "answer_time_s": round(loop_time, 3),
            "questions_per_s": round(new / loop_time, 3) if new and loop_time > 0 else None,
            "engine": self.backend_info,
            "usage": _usage(self.shards_dir, {int(row["index"]) for row in rows}),
            "versions": results.library_versions(),
        }
        previous = Path(config.output_dir) / results.RESULTS_FILE
        if not new and previous.exists():  # a finished run rerun: keep the timing of the runs that answered
            earlier = json.loads(previous.read_text(encoding="utf-8")).get("run") or {}
            timing = ("wall_time_s", "answer_time_s", "questions_per_s", "engine")
            run_info.update({key: earlier.get(key) for key in timing})
        results.write_outputs(
            config.output_dir,
            records,
            run_info,
            config.split,
            rows,
            matching=config.matching,
            data=questions.data,
            judge=judge,
        )
        summary = "no answers (test split)"
        if records and records[0]["answer"] is not None:
            correct = sum(bool(r["hit"]) for r in records)
            summary = f"accuracy {correct / len(records):.2%} ({correct}/{len(records)})"
        logger.info("%s; %d failed; outputs in %s", summary, len(errors), config.output_dir)
        if run_info["truncated"]:
            logger.warning(
                "%d answers stopped at --max-new-tokens %d; raise it if they were cut off before the letter",
                run_info["truncated"],
                config.max_new_tokens,
            )
        if retryable:
            first = errors[retryable[0]]
            logger.error(
                "%d question(s) failed (e.g. %s); they are scored as wrong: rerun the same command to retry "
                "them",
                len(retryable),
                first,
            )
            return 1
        return 0


class FailureLog:
    """Logs the first failure of each kind (numbers aside) and only counts the rest: a model whose
    context is too short fails every question the same way, and says so once, not per question."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}

    def add(self, error: str) -> None:
        kind = re.sub(r"\d+", "N", error)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.kinds[kind] == 1:
            logger.warning("%s (other questions failing the same way are counted, not logged)", error)
        else:
            logger.debug("%s", error)


def _plan_for(path: Path, token: str) -> dict[str, Any] | None:
    """The plan in ``path`` if it is this launch's (an earlier launch's plan may still be there)."""
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return plan if plan.get("token") == token else None


def _usage(shards_dir: Path, indices: set[int]) -> dict[str, int] | None:
    """Request accounting of the selected questions (API backends; None otherwise), summed over
    every request ever sent for them: failed attempts of earlier launches included."""
    total: dict[str, int] = {}
    for index, answer in answer_lines(shards_dir, quiet=True):
        if index in indices:
            for key, value in (answer.get("usage") or {}).items():
                total[key] = total.get(key, 0) + int(value)
    return total or None


def saved_answers(output_dir: str | os.PathLike[str]) -> int:
    """How many questions have an answer on disk in ``output_dir`` (for the interrupt message)."""
    shards_dir = Path(output_dir) / SHARDS_DIR
    if not shards_dir.is_dir():
        return 0
    return sum(not answer.get("error") for answer in read_answers(shards_dir).values())


def make_state() -> Any:
    """accelerate's process state; gloo on CPU so ``--multi_gpu`` launches work without GPUs.

    Collectives time out after :func:`gmai_hf.processes.startup_timeout_s`: only the start-up
    token broadcast uses one; everything that may take long coordinates through files.
    """
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    from gmai_hf.processes import startup_timeout_s

    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=startup_timeout_s()))


def model_identity(config: RunConfig) -> dict[str, Any] | None:
    """What the model is, beyond its name: a local folder's fingerprint (weights replaced at the
    same path change it), a Hub model's commit, or the name a server lists the model under."""
    if config.backend == "transformers":
        if Path(config.model).is_dir():
            return {"folder_sha256": fingerprints.model_folder_fingerprint(config.model)}
        return {"hub_commit": fingerprints.hub_model_commit(config.model)}
    if config.backend == "openai":
        chat = chat_client(config)
        chat.check()
        return {"listed_as": chat.listed_model}  # the endpoint is keyed as base_url
    return None


def chat_client(config: RunConfig) -> Any:
    """The ``openai`` backend's client for ``config`` (for the checks made before a run starts)."""
    from gmai_hf.client import ChatClient, ClientOptions

    options = {k: v for k, v in config.backend_options.items() if k != "max_image_side"}
    return ChatClient(config.model, ClientOptions.from_mapping(options))


def remove_unanswered(output_dir: Path) -> None:
    """Remove a run folder that holds no answer (what a failed start made: shards, markers, plan)."""
    shards = output_dir / SHARDS_DIR
    if not output_dir.is_dir() or any(path.stat().st_size for path in shards.glob("answers-*.jsonl")):
        return
    if any(path.name != SHARDS_DIR for path in output_dir.iterdir()):
        return  # something else is there: not ours to remove
    import shutil

    shutil.rmtree(output_dir, ignore_errors=True)


def preflight(config: RunConfig) -> None:
    """The checks that need neither the output folder nor the data: a run that cannot start fails
    here in seconds and in one line, before it makes anything on disk."""
    if config.data_dir is None and config.dataset is None:
        from gmai_hf.download import require_hub

        require_hub(config.split)
    if config.backend == "transformers":
        from gmai_hf.backends.hf import locate_model

        locate_model(config.model)
    if config.backend == "openai":
        chat_client(config).check()  # reachable, the key accepted, the model served


def run(config: RunConfig) -> int:
    """Run (or resume) an evaluation in this process; the exit status of the process."""
    config.validate()
    preflight(config)
    heartbeat = Heartbeat().start()  # from the start: an orphaned process exits even during start-up
    try:
        state = make_state()
        return Runner(config, state, heartbeat).run()
    finally:
        heartbeat.stop()
