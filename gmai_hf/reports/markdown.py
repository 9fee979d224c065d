"""report.md: the sections a person reads, honesty lines first."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gmai_hf import paired, schema, vlmevalkit_prompts
from gmai_hf.files import write_atomic
from gmai_hf.reports.records import (
    DIMENSION_TITLES,
    MIN_NODE_QUESTIONS,
    REPORT_DIMENSIONS,
    Run,
    _display,
    _interval,
    _pct,
    breakdown,
    is_sample,
    leaderboard_rank,
    letter_counts,
    overall_interval,
    reference_rows,
    reference_split,
    weakest_nodes,
)
from gmai_hf.tree import NONE_LABEL, label


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


def header_section(runs: Sequence[Run]) -> list[str]:
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
    lines += header_section(runs)
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
