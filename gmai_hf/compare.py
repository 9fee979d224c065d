"""Is model A really better than model B, and where? A paired comparison of two runs.

Both runs answered the same questions (checked on each question's content fingerprint, which
every run keeps in its predictions: text, options, answer and image bytes), so they are compared
question by question
(:mod:`gmai_hf.paired`): overall, for every value of every breakdown dimension (``by``) and for
every node of every view of the lexical tree (``tree``), with McNemar's exact test,
Newcombe's interval of the difference, and a Benjamini-Hochberg adjustment over all nodes.
``difference`` is accuracy(A) - accuracy(B): positive where A is better.

Writes ``comparison.json``, ``comparison.md`` and ``comparison.png`` (per-node differences).
The settings of both runs are recorded side by side; where they differ in anything but the
model, the report says so first: such a difference, not the models, may explain the numbers.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gmai_hf import paired, schema
from gmai_hf.files import write_atomic
from gmai_hf.reports import DIMENSION_TITLES, Run, load_run, markdown_table, tree_nodes
from gmai_hf.tree import label

logger = logging.getLogger(__name__)

COMPARISON_FILE = "comparison.json"
#: Settings compared side by side (``run`` keys of results.json), besides the data.
SETTINGS: tuple[str, ...] = (
    "model",
    "backend",
    "mode",
    "protocol",
    "matching",
    "judge",
    "prompt",
    "max_new_tokens",
)
#: Dimensions drawn in the plot (``category`` has hundreds of values: in the JSON only).
PLOTTED: tuple[str, ...] = ("clinical_vqa_task", "department", "perceptual_granularity", "modality")
#: Columns of a question that must agree between the runs for them to have scored the same data.
_CONTENT: tuple[str, ...] = ("answer", "category", "clinical_vqa_task", "modality")


def settings(run: Run) -> dict[str, Any]:
    """What a run was measured with: its settings and its data (source, official, files)."""
    info = run.info
    values: dict[str, Any] = {key: info.get(key) for key in SETTINGS}
    judge = info.get("judge")
    values["judge"] = judge.get("model") if isinstance(judge, dict) else None
    data = run.results.get("data") or {}
    values["data"] = {
        "source": data.get("source"),
        "official": data.get("official"),
        "files": [[f.get("name"), f.get("bytes")] for f in data.get("files") or []],
    }
    return values


def join(a: Run, b: Run) -> tuple[list[int], str | None]:
    """The questions both runs answered, and a note when that is not all of either's.

    Refuses (``ValueError``, naming the difference) different splits, runs without answers,
    question sets of which neither holds the other, and runs whose shared questions differ (in
    their content fingerprints, or, for runs written before those, in answer and labels).
    """
    if a.split != b.split:
        raise ValueError(
            f"{a.label} is on the {a.split} split, {b.label} on {b.split}: compare runs of one split"
        )
    for run in (a, b):
        if not run.has_answers:
            raise ValueError(
                f"{run.label} ({run.path}) has no answers to compare (test split): compare validation runs"
            )
    in_a = {int(r["index"]): r for r in a.records}
    in_b = {int(r["index"]): r for r in b.records}
    shared = sorted(in_a.keys() & in_b.keys())
    only_a, only_b = sorted(in_a.keys() - in_b.keys()), sorted(in_b.keys() - in_a.keys())
    if not shared:
        raise ValueError(f"{a.label} and {b.label} share no question: they answered different slices")
    if only_a and only_b:
        raise ValueError(
            f"{a.label} and {b.label} answered different questions: {len(only_a)} only in {a.label} "
            f"(e.g. {schema.preview_indices(only_a)}), {len(only_b)} only in {b.label} "
            f"(e.g. {schema.preview_indices(only_b)}); "
            "compare runs on the same questions, or a slice with the run it was cut from"
        )
    differ = content_differences(in_a, in_b, shared)
    if differ:
        raise ValueError(
            f"{a.label} and {b.label} asked different questions: {len(differ)} of the {len(shared)} "
            "questions they share differ in text, options, answer or image (indices "
            f"{schema.preview_indices(differ)}); compare runs on the same data"
        )
    if differ is None:
        logger.warning(
            "%s or %s keeps no question fingerprints (written by an older gmai-hf): whether both asked the "
            "same questions (text, options, images) could not be checked, only their answers and labels",
            a.label,
            b.label,
        )
    for index in shared:
        for column in _CONTENT:
            if in_a[index].get(column) != in_b[index].get(column):
                raise ValueError(
                    f"{a.label} and {b.label} scored different data: question {index} has {column} "
                    f"{in_a[index].get(column)!r} in {a.label} and {in_b[index].get(column)!r} in {b.label}; "
                    "compare runs on the same files"
                )
    note = None
    if only_a or only_b:
        bigger = a if only_a else b
        note = (
            f"compared on the {len(shared)} questions both runs answered ({bigger.label} answered "
            f"{len(shared) + len(only_a or only_b)}): the other run is a slice of it"
        )
    return shared, note


def content_differences(
    in_a: Mapping[int, Mapping[str, Any]], in_b: Mapping[int, Mapping[str, Any]], shared: Sequence[int]
) -> list[int] | None:
    """The shared questions whose content fingerprints differ (None: a run keeps none to check)."""
    if any(not in_a[i].get("fingerprint") or not in_b[i].get("fingerprint") for i in shared):
        return None
    return [i for i in shared if in_a[i]["fingerprint"] != in_b[i]["fingerprint"]]


def compare(a: Run, b: Run, alpha: float = paired.ALPHA) -> dict[str, Any]:
    """``comparison.json``'s content for runs ``a`` and ``b``."""
    shared, note = join(a, b)
    hits_a = {int(r["index"]): bool(r["hit"]) for r in a.records}
    hits_b = {int(r["index"]): bool(r["hit"]) for r in b.records}
    records = {int(r["index"]): r for r in a.records}
    nodes: dict[tuple[str, ...], dict[str, Any]] = {}
    groups: dict[tuple[str, ...], tuple[int, ...]] = {}  # the questions a node holds

    def node(key: tuple[str, ...], indices: Sequence[int]) -> dict[str, Any]:
        pairs = paired.Pairs.count([hits_a[i] for i in indices], [hits_b[i] for i in indices])
        nodes[key] = paired.compare_node(pairs)
        groups[key] = tuple(indices)
        return nodes[key]

    overall = node(("overall",), shared)
    by: dict[str, dict[str, Any]] = {}
    for dimension in schema.BREAKDOWN_DIMENSIONS:
        members: dict[str, list[int]] = defaultdict(list)
        for index in shared:
            members[label(records[index].get(dimension))].append(index)
        by[dimension] = {value: node(("by", dimension, value), members[value]) for value in sorted(members)}
    tree = {view: _tree(view, shared, records, node) for view in schema.TREE_VIEWS}
    paired.adjust(nodes, groups, alpha)
    decisive = paired.smallest_decisive(alpha)
    mine, theirs = settings(a), settings(b)
    return {
        "a": {"label": a.label, "path": str(origin(a)), "settings": mine},
        "b": {"label": b.label, "path": str(origin(b)), "settings": theirs},
        "split": a.split,
        "questions": len(shared),
        "content_checked": content_differences(
            {int(r["index"]): r for r in a.records}, {int(r["index"]): r for r in b.records}, shared
        )
        is not None,
        "note": note,
        "alpha": alpha,
        "test": "McNemar exact (two-sided)",
        "interval": "Newcombe hybrid score (method 10), 95%",
        "adjustment": "Benjamini-Hochberg over all distinct nodes",
        "settings_differ": differing_settings(mine, theirs),
        "too_small": sum(n["a_only"] + n["b_only"] < decisive for n in _distinct(nodes, groups).values()),
        "nodes": len(set(groups.values())),
        "overall": overall,
        "by": by,
        "tree": tree,
    }


def _tree(
    view: str, shared: Sequence[int], records: Mapping[int, Mapping[str, Any]], node: Any
) -> dict[str, Any]:
    """``tree[view]``: value -> modality -> category, each a comparison node with ``children``."""
    levels: dict[str, dict[str, dict[str, list[int]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for index in shared:
        record = records[index]
        path = (label(record.get(view)), label(record.get("modality")), label(record.get("category")))
        levels[path[0]][path[1]][path[2]].append(index)
    out: dict[str, Any] = {}
    for value in sorted(levels):
        modalities = levels[value]
        everything = sorted(i for group in modalities.values() for indices in group.values() for i in indices)
        entry = node(("tree", view, value), everything)  # adjusted in place later: not copied
        entry["children"] = {}
        for modality in sorted(modalities):
            categories = modalities[modality]
            in_modality = sorted(i for indices in categories.values() for i in indices)
            child = node(("tree", view, value, modality), in_modality)
            child["children"] = {
                category: node(("tree", view, value, modality, category), sorted(categories[category]))
                for category in sorted(categories)
            }
            entry["children"][modality] = child
        out[value] = entry
    return out


def _distinct(
    nodes: Mapping[Any, dict[str, Any]], groups: Mapping[Any, Hashable]
) -> dict[Any, dict[str, Any]]:
    return {groups[key]: node for key, node in nodes.items()}


def differing_settings(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Settings (and data) that differ between two runs' :func:`settings`, other than the model:
    ``{name: [a, b]}``."""
    return {key: [mine[key], theirs[key]] for key in mine if key != "model" and mine[key] != theirs[key]}


# --- Outputs ---------------------------------------------------------------------------------


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _describe(node: Mapping[str, Any], a: str, b: str) -> str:
    low, high = node["ci95"]
    verdict = "significant" if node["significant"] else "not significant"
    return (
        f"{a} {100 * node['accuracy_a']:.1f}% vs {b} {100 * node['accuracy_b']:.1f}% on {node['n']} "
        f"questions: difference {_points(node['difference'])} points [95% CI {_points(low)}, "
        f"{_points(high)}]; right only in {a}: {node['a_only']}, only in {b}: {node['b_only']}; "
        f"McNemar p = {node['p_value']:.3g} (adjusted {node['p_adjusted']:.3g}): {verdict}"
    )


def _significant_rows(result: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    rows = [
        (DIMENSION_TITLES[dimension], value, node)
        for dimension, values in result["by"].items()
        for value, node in values.items()
    ]
    rows += [
        (f"tree: {DIMENSION_TITLES[view]}", " › ".join(path), node)
        for view, path, node in tree_nodes(result["tree"])
        if len(path) > 1  # top-level values are already listed under their dimension
    ]
    significant = [row for row in rows if row[2]["significant"]]
    return sorted(significant, key=lambda row: (-abs(row[2]["difference"]), row[0], row[1]))


def write_markdown(result: Mapping[str, Any], path: Path) -> Path:
    a, b = result["a"]["label"], result["b"]["label"]
    lines = [f"# {a} vs {b}: paired comparison on GMAI-MMBench", ""]
    synthetic = [
        result[run]["label"] for run in ("a", "b") if result[run]["settings"]["data"]["source"] == "sample"
    ]
    if synthetic:
        lines += [
            f"> **Synthetic sample** ({', '.join(synthetic)}): made-up questions and images for trying the "
            "tools; these differences say nothing about the models.",
            "",
        ]
    if result["settings_differ"]:
        lines += [
            "> **The runs differ in more than the model**: "
            + "; ".join(
                f"{key}: {_short(mine)} vs {_short(theirs)}"
                for key, (mine, theirs) in result["settings_differ"].items()
            )
            + ". Such differences, not the models, may explain the numbers below.",
            "",
        ]
    if result["note"]:
        lines += [f"> Note: {result['note']}.", ""]
    if not result.get("content_checked", True):
        lines += [
            "> The runs keep no question fingerprints (an older gmai-hf): that both asked the same questions "
            "(text, options, images) was not checked, only their answers and labels.",
            "",
        ]
    rows = [
        (key, _short(result["a"]["settings"][key]), _short(result["b"]["settings"][key]))
        for key in result["a"]["settings"]
    ]
    lines += markdown_table(["setting", a, b], rows, align="lll")
    lines += ["## Overall", "", _describe(result["overall"], a, b) + ".", ""]
    significant = _significant_rows(result)
    lines += ["## Where the difference is significant", ""]
    if significant:
        lines += [
            f"After the {result['adjustment']} adjustment at {result['alpha']:g}, largest difference first "
            f"(positive: {a} better).",
            "",
        ]
        header = ["where", "node", "n", f"{a} %", f"{b} %", "difference [95% CI]", f"only {a}", f"only {b}"]
        table = [
            (
                where,
                name,
                node["n"],
                f"{100 * node['accuracy_a']:.1f}",
                f"{100 * node['accuracy_b']:.1f}",
                f"{_points(node['difference'])} [{_points(node['ci95'][0])}, {_points(node['ci95'][1])}]",
                node["a_only"],
                node["b_only"],
                f"{node['p_adjusted']:.3g}",
            )
            for where, name, node in significant
        ]
        lines += markdown_table([*header, "p (adjusted)"], table, align="llrrrrrrr")
    else:
        lines += ["No node differs significantly after the adjustment.", ""]
    decisive = paired.smallest_decisive(result["alpha"])
    lines += [
        f"{result['too_small']} of the {result['nodes']} distinct nodes had fewer than {decisive} questions "
        "that only one run answered right: too few to tell a difference at all, whatever the models. "
        f"Differences are accuracy({a}) - accuracy({b}) in % points; {result['test']}; "
        f"{result['interval']}.",
        "",
        "![per-node differences](comparison.png)",
        "",
    ]
    write_atomic(path, "\n".join(lines))
    return path


def _short(value: Any) -> str:
    if isinstance(value, dict):
        value = ", ".join(f"{k}={v}" for k, v in value.items() if k != "files") + (
            f", files={value['files']}" if value.get("files") else ""
        )
    return str(value)


def origin(run: Run) -> Path:
    """Where a run came from: its folder, or the prediction file ``gmai-hf score`` read for it."""
    return Path(run.info.get("source") or run.path)


def write_comparison(
    run_a: str | Path, run_b: str | Path, output_dir: str | Path, alpha: float = paired.ALPHA
) -> list[Path]:
    """Compare two run folders; writes comparison.json, comparison.md and comparison.png."""
    from gmai_hf import plots

    a, b = load_run(run_a), load_run(run_b)
    if a.label == b.label:
        a.label, b.label = f"{a.label} ({origin(a).name})", f"{b.label} ({origin(b).name})"
    result = compare(a, b, alpha)
    if result["settings_differ"]:
        logger.warning(
            "the runs differ in more than the model (%s): that, not the models, may explain the numbers",
            ", ".join(result["settings_differ"]),
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_atomic(output_dir / COMPARISON_FILE, json.dumps(result, indent=2) + "\n")]
    paths.append(write_markdown(result, output_dir / "comparison.md"))
    sections = {"Overall": [("all questions", result["overall"])]}
    sections.update(
        {DIMENSION_TITLES[d]: list(result["by"][d].items()) for d in PLOTTED if d in result["by"]}
    )
    paths.append(
        plots.difference_forest(
            sections,
            output_dir / "comparison.png",
            title=f"{result['a']['label']} - {result['b']['label']}",
            synthetic=any(result[run]["settings"]["data"]["source"] == "sample" for run in ("a", "b")),
        )
    )
    return paths
