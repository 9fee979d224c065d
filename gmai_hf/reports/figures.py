"""The PNG plots of a report (drawn by ``gmai_hf.plots``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gmai_hf import schema
from gmai_hf.reports.records import (
    ABBREVIATIONS,
    DIMENSION_TITLES,
    Run,
    _display,
    _file_stem,
    breakdown,
    is_sample,
    letter_counts,
    reference_rows,
    reference_split,
)


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
