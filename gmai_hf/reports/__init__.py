"""Reports people read: report.md, CSVs (ours and VLMEvalKit's layout), PNG plots, unmatched.jsonl,
explorer.html.

Everything here is computed from what a run already wrote (``results.json`` and
``predictions.jsonl``), so a report can be rebuilt, or several runs compared, without rerunning
a model. The numbers are the metric's own (``results.json`` is ``scoring.compute`` output); this
module only arranges them and adds the leaderboard's reference rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from gmai_hf.reports.figures import (
    write_plots,
)
from gmai_hf.reports.markdown import (
    LEADERBOARD_PROTOCOL_NOTE,
    below_best,
    comparability_problems,
    data_label,
    markdown_table,
    run_notes,
    write_markdown,
)
from gmai_hf.reports.records import (
    ABBREVIATIONS,
    DIMENSION_TITLES,
    MIN_NODE_QUESTIONS,
    REPORT_DIMENSIONS,
    VLMEVALKIT_DATASET,
    VLMEVALKIT_MISSING,
    WEAKEST_NODES_SHOWN,
    Run,
    _file_stem,
    _unique_labels,
    breakdown,
    leaderboard,
    leaderboard_rank,
    letter_counts,
    load_run,
    overall_interval,
    reference_rows,
    reference_split,
    tree_nodes,
    unmatched_records,
    weakest_nodes,
)
from gmai_hf.reports.tables import (
    FORMULA_STARTS,
    SafeCsvWriter,
    csv_cell,
    write_dimension_csvs,
    write_unmatched,
    write_vlmevalkit_csvs,
)
from gmai_hf.scoring import wilson_interval

logger = logging.getLogger(__name__)

__all__ = [
    "ABBREVIATIONS",
    "DIMENSION_TITLES",
    "FORMULA_STARTS",
    "LEADERBOARD_PROTOCOL_NOTE",
    "MIN_NODE_QUESTIONS",
    "REPORT_DIMENSIONS",
    "VLMEVALKIT_DATASET",
    "VLMEVALKIT_MISSING",
    "WEAKEST_NODES_SHOWN",
    "Run",
    "SafeCsvWriter",
    "below_best",
    "breakdown",
    "comparability_problems",
    "csv_cell",
    "data_label",
    "leaderboard",
    "leaderboard_rank",
    "letter_counts",
    "load_run",
    "markdown_table",
    "overall_interval",
    "reference_rows",
    "reference_split",
    "run_notes",
    "tree_nodes",
    "unmatched_records",
    "weakest_nodes",
    "wilson_interval",
    "write_dimension_csvs",
    "write_markdown",
    "write_plots",
    "write_reports",
    "write_unmatched",
    "write_vlmevalkit_csvs",
]


def write_reports(run_dirs: Sequence[str | Path], output_dir: str | Path, images: bool = True) -> list[Path]:
    """Write report.md, CSVs, VLMEvalKit-layout CSVs, PNG plots, unmatched.jsonl and explorer.html
    (with thumbnails and images beside it unless ``images`` is false) for ``run_dirs``.

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
    plots = write_plots(runs, output_dir)
    paths.append(write_markdown(runs, output_dir / "report.md", plots))
    from gmai_hf.explorer import write_explorer  # the explorer reads the split back: only here

    paths.append(write_explorer(runs, output_dir, images))
    logger.info("Report for %d run(s) written to %s", len(runs), output_dir / "report.md")
    return [*paths, *plots]
