"""Reports people read: report.md, CSVs (ours and VLMEvalKit's layout), PNG plots, unmatched.jsonl.

Everything here is computed from what a run already wrote (``results.json`` and
``predictions.jsonl``), so a report can be rebuilt, or several runs compared, without rerunning
a model. The numbers are the metric's own (``results.json`` is ``scoring.compute`` output); this
module only arranges them and adds the leaderboard's reference rows.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from gmai_hf import paired, schema, vlmevalkit_prompts
from gmai_hf.files import open_atomic, write_atomic
from gmai_hf.scoring import wilson_interval
from gmai_hf.tree import NONE_LABEL, label

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

#: What makes a spreadsheet read a cell as a formula (OWASP's CSV-injection advice).
FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` safe to open in a spreadsheet: text that starts like a formula (a label or model
    name such as ``=HYPERLINK(...)``) gets a leading apostrophe, so it shows as text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeCsvWriter:
    """``csv.writer`` whose rows pass through :func:`csv_cell`."""

    def __init__(self, handle: Any, **options: Any) -> None:
        self._writer = csv.writer(handle, **options)

    def writerow(self, row: Sequence[Any]) -> None:
        self._writer.writerow([csv_cell(value) for value in row])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table (cells escaped), then a blank line; ``align``: ``l``/``r`` per column (default:
    the first left, the rest right)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    aligns = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in aligns]
    return [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "| " + " | ".join(rule) + " |",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
        "",
    ]


def _chance_cell(nodes: Sequence[dict[str, Any]]) -> str:
    """The chance level of a node, shared by the runs that have it ("varies" where their questions differ)."""
    chances = {round(node["chance"], 9) for node in nodes if node.get("chance") is not None}
    if not chances:
        return ""
    return _pct(chances.pop()) if len(chances) == 1 else "varies"


def _accuracy_cell(node: dict[str, Any] | None) -> str:
    if node is None:
        return ""
    if node.get("accuracy") is None:
        return f"n={node['total']}"
    return f"{_pct(node['accuracy'])} ({node['correct']}/{node['total']})"


def _selection_text(info: dict[str, Any]) -> str:
    """How a run's questions were chosen, in words ("" for the whole split)."""
    selection, limit = info.get("selection"), info.get("limit")
    if isinstance(selection, dict):
        selection = "; ".join(
            f"{name} = {', '.join(map(str, values)) if isinstance(values, list) else values}"
            for name, values in selection.items()
        )
    parts = [str(selection)] if selection else []
    if limit:
        parts.append(f"first {limit} questions")
    return ", ".join(parts)


#: How the leaderboard's rows were measured, as far as the dataset card and VLMEvalKit's history show.
LEADERBOARD_PROTOCOL_NOTE = (
    "The leaderboard rows (GMAI-MMBench dataset card, 2024) were measured with VLMEvalKit as it was when "
    "the benchmark was added (commit 69268c70, 2024-08-19): its generic multiple-choice prompt, images "
    "re-encoded as JPEG (quality 75), option cells pandas reads as missing dropped, and the matcher of that "
    "commit (`--matching vlmevalkit-2024`). VLMEvalKit then also asked a gpt-3.5-turbo-0125 judge about "
    "answers exact matching could not read whenever an OpenAI key was set, and drew a random letter where "
    "the judge failed; whether the published rows used that judge is not stated anywhere we could read. "
    "So a run under `--protocol vlmevalkit` on the official files is the closest measurement, not "
    "necessarily the same one."
)


def comparability_problems(run: Run) -> list[str]:
    """Why ``run``'s numbers cannot stand beside the leaderboard's (empty: they can, with the note
    :data:`LEADERBOARD_PROTOCOL_NOTE`). Gates the leaderboard rank and labels reference columns."""
    problems = []
    data = run.results.get("data")
    if not isinstance(data, dict):
        problems.append("which data it scored is not recorded (written by an older gmai-hf)")
    elif not data.get("official"):
        problems += [str(problem) for problem in data.get("problems") or ["not the official release"]]
    selection = _selection_text(run.info)
    if selection:
        problems.append(f"part of the split ({selection})")
    protocol = run.info.get("protocol")
    if protocol not in (None, "vlmevalkit"):
        problems.append(f"--protocol {protocol}: the model saw other inputs than VLMEvalKit shows")
    problems += vlmevalkit_prompts.comparability_problems(run.info)
    if run.info.get("matching") == "strict":
        problems.append("--matching strict: answers read by other rules than VLMEvalKit's")
    failed = run.info.get("failed")
    if failed:
        problems.append(f"{failed} question(s) failed and are scored as wrong")
    return problems


def data_label(run: Run) -> str:
    """What a run scored, in a few words (for the settings table)."""
    data = run.results.get("data")
    if not isinstance(data, dict):
        return "not recorded"
    source = {"official": "Hub download", "sample": "synthetic sample", "local": "local files"}.get(
        str(data.get("source")), str(data.get("source"))
    )
    verdict = "official" if data.get("official") else "not official"
    return f"{source}, {data.get('questions')} questions, {verdict}"


def _judge_label(info: dict[str, Any]) -> str:
    judge = info.get("judge")
    if not isinstance(judge, dict):
        return "none"
    return str(judge.get("model"))


def is_sample(run: Run) -> bool:
    """Whether the run scored the bundled synthetic sample (directly or through an export of it)."""
    return (run.results.get("data") or {}).get("source") == "sample"


def _header_section(runs: Sequence[Run]) -> list[str]:
    """The lines a reader must see first: synthetic data, comparability, how each run was scored."""
    lines = []
    synthetic = [run.label for run in runs if is_sample(run)]
    if synthetic:
        lines += [
            f"> **Synthetic sample** ({', '.join(synthetic)}): made-up questions and images for trying the "
            "tools; these numbers say nothing about a model.",
            "",
        ]
    problems = {run.label: comparability_problems(run) for run in runs}
    if any(problems.values()):
        lines += [
            "> **Not comparable with the leaderboard**: no leaderboard rank is given, and the leaderboard's "
            "reference columns are for orientation only.",
            *(f"> - {label}: {'; '.join(reasons)}." for label, reasons in problems.items() if reasons),
            "",
        ]
    rows = [
        (
            run.label,
            run.model,
            run.info.get("protocol") or "—",
            run.info.get("matching") or "—",
            _judge_label(run.info),
            data_label(run),
        )
        for run in runs
    ]
    lines += [
        *markdown_table(("run", "model", "protocol", "matching", "judge", "data"), rows, align="llllll"),
        LEADERBOARD_PROTOCOL_NOTE,
        "",
    ]
    return lines


def _summary_section(runs: Sequence[Run]) -> list[str]:
    rows = []
    notes = []
    for run in runs:
        total, unmatched = run.results.get("total") or 0, run.results.get("unmatched") or 0
        unmatched_cell = f"{unmatched} ({_pct(unmatched / total if total else None)}%)"
        if run.has_answers:
            low, high = overall_interval(run) or (None, None)
            accuracy = f"**{_pct(run.results['accuracy'])}** [{_pct(low)}, {_pct(high)}]"
            rank_cell = "— (not comparable: see above)"
            if not comparability_problems(run):
                rank, of, above, below = leaderboard_rank(run.results["accuracy"], run.split)
                neighbours = ", ".join(
                    part
                    for part in (f"below {above}" if above else "", f"above {below}" if below else "")
                    if part
                )
                rank_cell = f"{rank} of {of} ({neighbours})"
        else:
            accuracy, rank_cell = f"— (no answers in {run.split})", "—"
        correct = run.results.get("correct")
        rows.append(
            (
                run.label,
                run.split,
                total,
                "—" if correct is None else correct,
                accuracy,
                _pct(run.results.get("chance")),
                unmatched_cell,
                rank_cell,
            )
        )
        notes += [f"- {run.label}: {note}" for note in run_notes(run)]
    lines = [
        "## Overall",
        "",
        *markdown_table(
            (
                "run",
                "split",
                "questions",
                "correct",
                "accuracy % [95% CI]",
                "chance %",
                "unmatched",
                "leaderboard rank",
            ),
            rows,
            align="llrrrrrl",
        ),
        "Accuracy in %, with its Wilson 95% interval. Chance: the expected accuracy of a uniform guess "
        "among the options each question shows, 0 where its answer is not shown (exact, not a draw), "
        "which is what the leaderboard's "
        "Random row is. Rank: the place this accuracy would take among the leaderboard's rows for the "
        "same split (dataset card), given only for runs comparable with them (whole official split, "
        "VLMEvalKit's protocol and matching).",
        "",
    ]
    if notes:
        lines += [*notes, ""]
    return lines


def run_notes(run: Run) -> list[str]:
    """What a reader should know about how a run's answers were read (sentences, in order)."""
    notes = []
    selection = _selection_text(run.info)
    if selection:
        notes.append(f"part of the split: {selection}.")
    if run.model.lower() == "random" and run.has_answers and run.results.get("chance") is not None:
        notes.append(
            f"the random baseline's seeded draw scored {_pct(run.results['accuracy'])}%; its expected "
            f"accuracy on these questions is {_pct(run.results['chance'], 2)}% (the chance column), "
            "which is what the leaderboard's Random row reports."
        )
    judge = run.results.get("judge")
    if isinstance(judge, dict):
        decided, failed = int(judge.get("decided") or 0), int(judge.get("failed") or 0)
        total = run.results.get("total") or 0
        notes.append(
            f"the LLM judge {judge.get('model')} read {decided + failed} answer(s) exact matching could "
            f"not: it decided {decided} ({_pct(decided / total if total else None)}% of all questions) "
            f"and failed on {failed}, which stay unmatched (VLMEvalKit would draw a random letter); "
            f"{judge.get('calls', 0)} call(s) made, {judge.get('cached', 0)} verdict(s) from its cache."
        )
    truncated = run.info.get("truncated")
    if truncated:
        notes.append(
            f"{truncated} answer(s) stopped at --max-new-tokens {run.info.get('max_new_tokens')}: raise it "
            "if they were cut off before the letter."
        )
    picks = run.info.get("vlmevalkit_random_picks")
    if picks:
        notes.append(
            f"VLMEvalKit's own scoring drew a random letter for {len(picks)} of these questions (its judge "
            "failed); here they are read from the prediction as written."
        )
    return notes


def _dimension_section(runs: Sequence[Run], dimension: str) -> list[str]:
    tables = [breakdown(run, dimension) for run in runs]
    references = reference_rows(dimension)
    values = sorted(set().union(*tables), key=lambda v: (v == NONE_LABEL, v))
    ref_split = reference_split(dimension)
    comparable = not any(comparability_problems(run) for run in runs)
    caveat = "" if comparable else ", not comparable"
    below = below_best(runs, dimension)
    header = [
        DIMENSION_TITLES[dimension],
        *(run.label for run in runs),
        *(["significantly below the best"] if below is not None else []),
        "chance",
        *(f"{model} (leaderboard {ref_split}{caveat})" for model in references),
    ]
    rows = [
        [
            _display(dimension, value),
            *(_accuracy_cell(table.get(value)) for table in tables),
            *([", ".join(below.get(value, [])) or "—"] if below is not None else []),
            _chance_cell([table[value] for table in tables if value in table]),
            *(f"{ref[value]:.2f}" if value in ref else "" for ref in references.values()),
        ]
        for value in values
    ]
    lines = [f"## By {DIMENSION_TITLES[dimension]}", "", *markdown_table(header, rows)]
    if below is not None:
        lines += [
            "Significantly below the best: the runs whose accuracy on that value is below the best run's by "
            "more than chance allows (paired McNemar exact test on the questions both answered, "
            f"Benjamini-Hochberg over this table at {paired.ALPHA:g}; `gmai-hf compare` gives the details).",
            "",
        ]
    return lines


def below_best(runs: Sequence[Run], dimension: str) -> dict[str, list[str]] | None:
    """Per value of ``dimension``, the runs significantly below the best run on it (None: fewer
    than two runs with answers). Paired tests on the questions both runs answered."""
    scored = [run for run in runs if run.has_answers]
    if len(scored) < 2:
        return None
    # value -> run -> question index -> hit, in one pass over the records
    members: dict[str, dict[str, dict[int, bool]]] = defaultdict(lambda: defaultdict(dict))
    for run in scored:
        for r in run.records:
            members[label(r.get(dimension))][run.label][int(r["index"])] = bool(r.get("hit"))
    tests: dict[tuple[str, str], dict[str, Any]] = {}
    for value in sorted(members):
        present = members[value]
        if len(present) < 2:
            continue
        best = max(present, key=lambda run: sum(present[run].values()) / len(present[run]))
        for run, answers in present.items():
            shared = sorted(answers.keys() & present[best].keys())
            if run == best or not shared:
                continue
            pairs = paired.Pairs.count([present[best][i] for i in shared], [answers[i] for i in shared])
            if pairs.a_only > pairs.b_only:
                tests[(value, run)] = {"p_value": paired.mcnemar_exact(pairs.a_only, pairs.b_only)}
    paired.adjust(tests, None, paired.ALPHA)
    below: dict[str, list[str]] = {}
    for (value, run), test in tests.items():
        if test["significant"]:
            below.setdefault(value, []).append(run)
    return below


def _weakest_section(runs: Sequence[Run]) -> list[str]:
    rows = []
    for run in runs:
        for view, path, node in weakest_nodes(run):
            low, high = _interval(node) or (None, None)
            rows.append(
                (
                    run.label,
                    DIMENSION_TITLES[view],
                    " › ".join(path),
                    node["total"],
                    f"{_pct(node['accuracy'])} [{_pct(low)}, {_pct(high)}]",
                )
            )
    if not rows:
        return [
            "## Weakest nodes of the tree",
            "",
            f"No node with answers and at least {MIN_NODE_QUESTIONS} questions.",
            "",
        ]
    return [
        "## Weakest nodes of the tree",
        "",
        f"Lowest accuracy among nodes (view › modality › category) with at least {MIN_NODE_QUESTIONS} "
        "questions.",
        "",
        *markdown_table(("run", "view", "node", "questions", "accuracy % [95% CI]"), rows, align="lllrr"),
    ]


def _choices_section(runs: Sequence[Run]) -> list[str]:
    header = ["letter"]
    columns: list[tuple[dict[str, float], bool]] = []  # (shares, is an answer column)
    for run in runs:
        chosen, answers = letter_counts(run)
        n = max(len(run.records), 1)
        answer_shares = {key: count / n for key, count in answers.items()}
        if answers and (answer_shares, True) not in columns:  # runs on the same questions share one column
            header.append(f"answer % ({run.label})")
            columns.append((answer_shares, True))
        header.append(f"{run.label}: chosen %")
        columns.append(({key: count / n for key, count in chosen.items()}, False))
    answer_columns = [i for i, (_, is_answer) in enumerate(columns, 1) if is_answer]
    if len(answer_columns) == 1:  # every run answered the same questions
        header[answer_columns[0]] = "answer %"
    rows = [
        [
            "no match" if key == "None" else key,
            *(
                "" if key == "None" and is_answer else _pct(shares.get(key, 0.0))
                for shares, is_answer in columns
            ),
        ]
        for key in (*schema.OPTION_LETTERS, "None")
    ]
    return [
        "## Chosen letters (position bias)",
        "",
        "Share of questions per chosen letter, beside the share per answer letter (where the split has "
        "answers). A model that favours a position chooses it more often than it is the answer.",
        "",
        *markdown_table(header, rows),
    ]


def write_markdown(runs: Sequence[Run], path: Path, images: Sequence[Path] = ()) -> Path:
    """``report.md``: overall, per dimension, weakest nodes, chosen letters, plots."""
    lines = ["# GMAI-MMBench report", ""]
    lines += _header_section(runs)
    lines += _summary_section(runs)
    for dimension in REPORT_DIMENSIONS:
        lines += _dimension_section(runs, dimension)
    lines += _weakest_section(runs)
    lines += _choices_section(runs)
    if images:
        lines += ["## Plots", ""]
        lines += [f"![{image.stem}]({image.name})" for image in images]
        lines.append("")
    write_atomic(path, "\n".join(lines))
    return path


def write_dimension_csvs(runs: Sequence[Run], output_dir: Path) -> list[Path]:
    """``accuracy_by_<dimension>.csv`` (long format: one row per run and value) plus ``summary.csv``."""
    paths = []
    summary = output_dir / "summary.csv"
    with open_atomic(summary, newline="") as handle:
        writer = SafeCsvWriter(handle)
        writer.writerow(
            ("run", "model", "split", "accuracy", "ci95_low", "ci95_high", "correct", "total", "unmatched")
        )
        for run in runs:
            low, high = overall_interval(run) or (None, None)
            writer.writerow(
                (
                    run.label,
                    run.model,
                    run.split,
                    run.results.get("accuracy"),
                    low,
                    high,
                    run.results.get("correct"),
                    run.results.get("total"),
                    run.results.get("unmatched"),
                )
            )
    paths.append(summary)
    for dimension in schema.BREAKDOWN_DIMENSIONS:
        path = output_dir / f"accuracy_by_{dimension}.csv"
        with open_atomic(path, newline="") as handle:
            writer = SafeCsvWriter(handle)
            writer.writerow(("run", dimension, "accuracy", "ci95_low", "ci95_high", "correct", "total"))
            for run in runs:
                for value, node in sorted(breakdown(run, dimension).items()):
                    low, high = _interval(node) or (None, None)
                    writer.writerow(
                        (run.label, value, node["accuracy"], low, high, node["correct"], node["total"])
                    )
        paths.append(path)
    return paths


def write_vlmevalkit_csvs(run: Run, output_dir: Path, stem: str) -> list[Path]:
    """VLMEvalKit's result CSVs for a validation run, so tooling that reads them keeps working.

    Layout followed (open-compass/VLMEvalKit): ``vlmeval/dataset/utils/multiple_choice.py``
    ``report_acc`` for ``<model>_GMAI-MMBench_VAL_acc.csv`` (columns ``split``, ``Overall``, then one
    per ``category``, sorted) and ``vlmeval/dataset/image_mcq.py`` ``GMAIMMBenchDataset.report_acc_by_groups``
    for ``..._<group>_acc.csv`` with group ``clinical vqa task``, ``department``, ``perceptual
    granularity`` (``split``, ``Overall``, one column per value, sorted, a missing value named
    ``None``). One row, ``split`` = ``none`` (the TSV has no split column), accuracies as fractions
    0..1, written by ``dump`` -> ``to_csv(index=False, quoting=csv.QUOTE_ALL)``. One deviation:
    VLMEvalKit's ``None`` column is empty (its filter never matches a missing value); ours holds
    the accuracy of those questions.
    """
    files = {"": "category"}
    files.update({f"_{schema.VLMEVALKIT_NAME[group]}": group for group in schema.TREE_VIEWS})
    paths = []
    for suffix, dimension in files.items():
        table = {
            VLMEVALKIT_MISSING if value == NONE_LABEL else value: node["accuracy"]
            for value, node in breakdown(run, dimension).items()
        }
        header = ["split", "Overall", *sorted(table)]
        row = ["none", run.results["accuracy"], *(table[value] for value in sorted(table))]
        path = output_dir / f"{stem}_{VLMEVALKIT_DATASET}{suffix}_acc.csv"
        with open_atomic(path, newline="") as handle:
            writer = SafeCsvWriter(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
            writer.writerow(header)
            writer.writerow(row)
        paths.append(path)
    return paths


def write_unmatched(runs: Sequence[Run], path: Path) -> Path:
    """``unmatched.jsonl``: every prediction no option was extracted from (with its run, if several)."""
    with open_atomic(path) as handle:
        for run in runs:
            for record in unmatched_records(run):
                if len(runs) > 1:
                    record = {"run": run.label, **record}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_plots(runs: Sequence[Run], output_dir: Path) -> list[Path]:
    """The PNG plots (see ``gmai_hf.plots``) for the runs that have what each plot needs."""
    from gmai_hf import plots  # matplotlib is slow to import: only when plotting

    paths = []
    scored = [run for run in runs if run.has_answers]
    synthetic = any(is_sample(run) for run in runs)
    if scored:
        for dimension in ("clinical_vqa_task", "department"):
            references = reference_rows(dimension)
            paths.append(
                plots.accuracy_bars(
                    {run.label: breakdown(run, dimension) for run in scored},
                    output_dir / f"accuracy_by_{dimension}.png",
                    title=f"Accuracy by {DIMENSION_TITLES[dimension]}",
                    labels={v: _display(dimension, v) for r in scored for v in breakdown(r, dimension)},
                    references={
                        f"{model} (leaderboard {reference_split(dimension)})": {
                            value: accuracy / 100 for value, accuracy in rows.items()
                        }
                        for model, rows in references.items()
                    },
                    synthetic=synthetic,
                )
            )
        for run in scored:
            tree = (run.results.get("tree") or {}).get("clinical_vqa_task")
            if not tree:  # the metric was computed without the modality/category columns
                continue
            name = "heatmap_task_modality" + ("" if len(scored) == 1 else f"_{_file_stem(run.label)}")
            paths.append(
                plots.heatmap(
                    {
                        ABBREVIATIONS["clinical_vqa_task"].get(task, task): node.get("children") or {}
                        for task, node in tree.items()
                    },
                    output_dir / f"{name}.png",
                    title=f"Accuracy by clinical VQA task × modality: {run.label}",
                    synthetic=is_sample(run),
                )
            )
    paths.append(
        plots.position_bias(
            {run.label: letter_counts(run) for run in runs},
            output_dir / "position_bias.png",
            letters=schema.OPTION_LETTERS,
            synthetic=synthetic,
        )
    )
    return paths


def write_reports(run_dirs: Sequence[str | Path], output_dir: str | Path) -> list[Path]:
    """Write report.md, CSVs, VLMEvalKit-layout CSVs, PNG plots and unmatched.jsonl for ``run_dirs``.

    Several runs are compared side by side. Returns the paths written.
    """
    if not run_dirs:
        raise ValueError("write_reports needs at least one run folder")
    # the same folder named twice (or by two spellings) is one run
    runs = [load_run(run_dir) for run_dir in dict.fromkeys(Path(d).resolve() for d in run_dirs)]
    _unique_labels(runs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = write_dimension_csvs(runs, output_dir)
    stems = Counter(_file_stem(run.model) for run in runs)
    for run in runs:
        if run.has_answers:
            stem = _file_stem(run.model if stems[_file_stem(run.model)] == 1 else run.label)
            paths += write_vlmevalkit_csvs(run, output_dir, stem)
    paths.append(write_unmatched(runs, output_dir / "unmatched.jsonl"))
    images = write_plots(runs, output_dir)
    paths.append(write_markdown(runs, output_dir / "report.md", images))
    logger.info("Report for %d run(s) written to %s", len(runs), output_dir / "report.md")
    return [*paths, *images]
