"""The record reading every report shares: a run folder's ``results.json`` and ``predictions.jsonl``
read back, the leaderboard's reference rows, and the per-node numbers the writers arrange."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from gmai_hf import schema
from gmai_hf.scoring import wilson_interval
from gmai_hf.tree import label

logger = logging.getLogger(__name__)

#: Dimensions with a table and a CSV, in report order (category has a CSV only: hundreds of values).
REPORT_DIMENSIONS: tuple[str, ...] = ("clinical_vqa_task", "department", "perceptual_granularity", "modality")

#: How a dimension is titled in tables and plots (the official header's spelling).
DIMENSION_TITLES: dict[str, str] = {
    feature: schema.FEATURE_TO_OFFICIAL[feature] for feature in schema.BREAKDOWN_DIMENSIONS
}

#: Abbreviations shown beside full label names, as the paper and leaderboard write them.
ABBREVIATIONS: dict[str, dict[str, str]] = {
    "clinical_vqa_task": schema.CLINICAL_VQA_TASKS,
    "department": schema.DEPARTMENTS,
}

#: Nodes of the tree with fewer questions than this are left out of "weakest nodes" (too noisy).
MIN_NODE_QUESTIONS = 10
WEAKEST_NODES_SHOWN = 10

#: VLMEvalKit's dataset name for the validation split; its result files are named after it.
VLMEVALKIT_DATASET = "GMAI-MMBench_VAL"

#: VLMEvalKit's column name for questions without a value (e.g. no department); ours is ``NONE_LABEL``.
VLMEVALKIT_MISSING = "None"


@dataclass
class Run:
    """One run folder's outputs, as read back for reporting."""

    path: Path
    results: dict[str, Any]
    records: list[dict[str, Any]]
    label: str = ""
    info: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.info = self.results.get("run") or {}
        self.label = self.label or self.model

    @property
    def model(self) -> str:
        return str(self.info.get("model") or self.path.name)

    @property
    def split(self) -> str:
        return str(self.info.get("split") or "validation")

    @property
    def has_answers(self) -> bool:
        return self.results.get("accuracy") is not None


def is_sample(run: Run) -> bool:
    """Whether the run scored the bundled synthetic sample (directly or through an export of it)."""
    return (run.results.get("data") or {}).get("source") == "sample"


def load_run(run_dir: str | Path) -> Run:
    """Read ``results.json`` and ``predictions.jsonl`` from a run folder (as written by ``results.py``)."""
    run_dir = Path(run_dir)
    results_path, predictions_path = run_dir / "results.json", run_dir / "predictions.jsonl"
    for path in (results_path, predictions_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: pass a folder written by `gmai-hf run` or `gmai-hf score` "
                "(it holds results.json and predictions.jsonl)"
            )
    results = json.loads(results_path.read_text(encoding="utf-8"))
    records = []
    with predictions_path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{predictions_path}, line {line_number}: not valid JSON ({error}); "
                    "the file may have been cut off: rerun the run to rewrite it"
                ) from error
    return Run(run_dir, results, records)


@cache
def leaderboard() -> dict[str, Any]:
    """The leaderboard rows bundled in ``gmai_hf/data/leaderboard.json`` (accuracy in percent)."""
    text = resources.files("gmai_hf").joinpath("data", "leaderboard.json").read_text(encoding="utf-8")
    return json.loads(text)


def leaderboard_rank(accuracy: float, split: str) -> tuple[int, int, str | None, str | None]:
    """Rank ``accuracy`` (0..1) would take among the leaderboard's ``split`` rows.

    Returns ``(rank, rows + 1, model just above, model just below)``; ties rank below the
    leaderboard entry, so a rank is never flattered.
    """
    rows = sorted(leaderboard()["overall"], key=lambda row: row[split], reverse=True)
    above = [row for row in rows if row[split] >= 100 * accuracy]
    below = rows[len(above) :]
    return (
        len(above) + 1,
        len(rows) + 1,
        above[-1]["model"] if above else None,
        below[0]["model"] if below else None,
    )


def reference_rows(dimension: str) -> dict[str, dict[str, float]]:
    """Leaderboard rows (model -> value -> accuracy in %) for ``dimension``; empty where it has none."""
    entry = leaderboard()["by"].get(dimension)
    return entry["rows"] if entry else {}


def reference_split(dimension: str) -> str | None:
    entry = leaderboard()["by"].get(dimension)
    return entry["split"] if entry else None


# --- Helpers over a run's numbers --------------------------------------------------------------


def _display(dimension: str, value: str) -> str:
    abbreviation = ABBREVIATIONS.get(dimension, {}).get(value)
    return f"{value} ({abbreviation})" if abbreviation else value


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}"


def _interval(node: dict[str, Any]) -> tuple[float, float] | None:
    """A node's 95% interval: ``ci95`` where the metric gives it (``by``), else Wilson from its counts."""
    if node.get("accuracy") is None:
        return None
    low, high = node.get("ci95") or wilson_interval(int(node["correct"]), int(node["total"]))
    return float(low), float(high)


def overall_interval(run: Run) -> tuple[float, float] | None:
    """Wilson 95% interval of a run's overall accuracy (None without answers)."""
    return _interval(run.results)


def breakdown(run: Run, dimension: str) -> dict[str, dict[str, Any]]:
    """``by[dimension]`` of a run, keyed by label; for a run without answers, question counts only."""
    by = run.results.get("by")
    if by and by.get(dimension) is not None:
        return {label(value): node for value, node in by[dimension].items()}
    counts = Counter(label(record.get(dimension)) for record in run.records)
    return {
        value: {"accuracy": None, "correct": None, "total": total, "ci95": None}
        for value, total in counts.items()
    }


def tree_nodes(tree: Mapping[str, Any] | None) -> Iterator[tuple[str, tuple[str, ...], dict[str, Any]]]:
    """Every node of every view of a tree (``results["tree"]``, a comparison's), as ``(view, path, node)``."""

    def walk(view: str, path: tuple[str, ...], nodes: dict[str, Any]) -> Iterator[Any]:
        for value, node in nodes.items():
            node_path = (*path, label(value))
            yield view, node_path, node
            yield from walk(view, node_path, node.get("children") or {})

    for view, nodes in (tree or {}).items():
        yield from walk(view, (), nodes or {})


def weakest_nodes(
    run: Run, min_questions: int = MIN_NODE_QUESTIONS, limit: int = WEAKEST_NODES_SHOWN
) -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    """The lowest-accuracy tree nodes with at least ``min_questions`` questions."""
    nodes = [
        entry
        for entry in tree_nodes(run.results.get("tree"))
        if entry[2].get("accuracy") is not None and entry[2].get("total", 0) >= min_questions
    ]
    nodes.sort(key=lambda entry: (entry[2]["accuracy"], -entry[2]["total"], entry[0], entry[1]))
    return nodes[:limit]


def letter_counts(run: Run) -> tuple[Counter[str], Counter[str]]:
    """(chosen letters, answer letters) over a run's questions; unmatched choices count as ``None``."""
    chosen = Counter(record.get("choice") or "None" for record in run.records)
    answers = Counter(record["answer"] for record in run.records if record.get("answer"))
    return chosen, answers


def unmatched_records(run: Run) -> list[dict[str, Any]]:
    return [record for record in run.records if record.get("choice") is None]


def _file_stem(name: str) -> str:
    """A file-name-safe model name (the last part of a Hub id)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.rstrip("/").rsplit("/", 1)[-1]).strip("_") or "model"


def _unique_labels(runs: Sequence[Run]) -> None:
    """Name runs by model; where two runs share a model, add the folder name."""
    counts = Counter(run.model for run in runs)
    for run in runs:
        run.label = run.model if counts[run.model] == 1 else f"{run.model} ({run.path.name})"


# --- Writers ------------------------------------------------------------------------------------
