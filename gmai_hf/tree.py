"""GMAI-MMBench's lexical tree, and selecting a slice of the benchmark by it.

The TSV is flat (one column per level); the tree has three views, each going top-level value ->
``modality`` -> ``category`` (the label). Everything here reads only the metadata columns through
Arrow, never the ``image`` column, so it stays fast on the 9 GB validation split.
Missing values (some Attribute Recognition rows have no department) are shown as
:data:`NONE_LABEL`, here, in the metric and on the command line; pass it to :func:`select` to pick them.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gmai_hf import schema

if TYPE_CHECKING:
    import datasets

#: How a missing metadata value (``None``) is shown and selected.
NONE_LABEL = "(none)"

#: Columns :func:`select` filters on, in the order of its arguments.
SELECT_COLUMNS: tuple[str, ...] = (*schema.TREE_VIEWS, "modality", "category")

_KEYWORD_COLUMNS: tuple[str, ...] = ("question", *schema.OPTION_LETTERS)
_WORD = re.compile(r"\w[\w'-]*")


def label(value: object) -> str:
    """The tree's name for a metadata value: the string itself, :data:`NONE_LABEL` for missing."""
    return NONE_LABEL if value is None or value == "" else str(value)


def nest(
    counts: Mapping[tuple[str, ...], tuple[int, ...]],
    make_node: Callable[[tuple[int, ...]], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Roll leaf counts up a tree: ``{path: counts}`` -> ``{name: {**node, "children": ...}}``.

    ``counts`` maps each leaf path (e.g. ``(task, modality, category)``) to a tuple of counts;
    a node's counts are the element-wise sums over its leaves, turned into its fields by
    ``make_node``. Names are sorted; leaves get no ``children``. Shared by :func:`build_tree`
    and the metric's tree.
    """
    root: dict[str, list] = {}  # name -> [summed counts, children]
    for path, stat in counts.items():
        level = root
        for name in path:
            entry = level.get(name)
            if entry is None:
                entry = level[name] = [stat, {}]
            else:
                entry[0] = tuple(map(operator.add, entry[0], stat))
            level = entry[1]
    return _finish(root, make_node)


def _finish(level: dict[str, list], make_node: Callable[[tuple[int, ...]], dict[str, Any]]) -> dict[str, Any]:
    tree = {}
    for name in sorted(level):
        stat, children = level[name]
        tree[name] = make_node(stat)
        if children:
            tree[name]["children"] = _finish(children, make_node)
    return tree


def build_tree(ds: datasets.Dataset, view: str = "clinical_vqa_task") -> dict[str, dict[str, Any]]:
    """The tree of ``view`` with question counts.

    ``{value: {"total": n, "children": {modality: {"total": n, "children": {category: {"total": n}}}}}}``
    """
    if view not in schema.TREE_VIEWS:
        raise ValueError(f"unknown view {view!r}: choose one of {', '.join(schema.TREE_VIEWS)}")
    table = _metadata(ds, (view, "modality", "category"))
    paths = zip(
        *(map(label, table.column(c).to_pylist()) for c in (view, "modality", "category")), strict=True
    )
    return nest({path: (n,) for path, n in Counter(paths).items()}, lambda stat: {"total": stat[0]})


def select(
    ds: datasets.Dataset,
    clinical_vqa_task: str | Sequence[str] | None = None,
    department: str | Sequence[str] | None = None,
    perceptual_granularity: str | Sequence[str] | None = None,
    modality: str | Sequence[str] | None = None,
    category: str | Sequence[str] | None = None,
    keywords: str | Sequence[str] | None = None,
) -> datasets.Dataset:
    """The questions of ``ds`` in the given slice of the tree.

    Each argument is a value or a list of values (any of them matches); arguments combine with
    "and". ``keywords`` match the question or any option text as case-insensitive substrings.
    A value (or keyword) found nowhere in ``ds`` raises ``ValueError`` naming the closest existing
    ones, so a typo never silently evaluates nothing. :data:`NONE_LABEL` selects missing values.
    """
    wanted = dict(
        zip(
            SELECT_COLUMNS,
            (clinical_vqa_task, department, perceptual_granularity, modality, category),
            strict=True,
        )
    )
    wanted = {column: _as_list(column, values) for column, values in wanted.items() if values is not None}
    words = _as_list("keywords", keywords) if keywords is not None else []
    if not wanted and not words:  # no filter: the whole dataset
        return ds
    table = _metadata(ds, [*wanted, *(_KEYWORD_COLUMNS if words else ())])
    mask = pa.array(np.ones(table.num_rows, dtype=bool))
    for column, values in wanted.items():
        mask = pc.and_(mask, _value_mask(table.column(column), column, values))
    if words:
        mask = pc.and_(mask, _keyword_mask(table, words))
    return ds.select(np.flatnonzero(mask.to_numpy(zero_copy_only=False)))


def _as_list(name: str, values: str | Sequence[str]) -> list[str]:
    values = list(values) if isinstance(values, list | tuple | set | frozenset) else [values]
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {values!r}")
    return values


def _metadata(ds: datasets.Dataset, columns: Iterable[str]) -> pa.Table:
    """Only ``columns`` of ``ds`` as an Arrow table, honouring any earlier select/shuffle."""
    columns = list(dict.fromkeys(columns))
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"the dataset has no column {', '.join(map(repr, missing))} "
            f"(it has {', '.join(ds.column_names)}); "
            'load it with datasets.load_dataset("gmai_mmbench", ...) after "import gmai_hf"'
        )
    return ds.select_columns(columns).with_format("arrow")[:]


def _value_mask(column: pa.ChunkedArray, name: str, values: list[str]) -> pa.ChunkedArray:
    existing = {label(v) for v in pc.unique(column).to_pylist()}
    for value in values:
        if value not in existing:
            raise ValueError(f"no question has {name} {value!r}; {_closest(value, existing)}")
    mask = pc.fill_null(pc.is_in(column, value_set=pa.array(values, pa.string())), False)
    if NONE_LABEL in values:
        mask = pc.or_(mask, pc.or_(pc.is_null(column), pc.fill_null(pc.equal(column, ""), False)))
    return mask


def _keyword_mask(table: pa.Table, words: list[str]) -> pa.ChunkedArray:
    mask = None
    for word in words:
        hits = None
        for column in _KEYWORD_COLUMNS:
            found = pc.fill_null(pc.match_substring(table.column(column), word, ignore_case=True), False)
            hits = found if hits is None else pc.or_(hits, found)
        if not pc.any(hits).as_py():
            vocabulary = {
                w.lower()
                for column in _KEYWORD_COLUMNS
                for text in pc.unique(table.column(column)).to_pylist()
                if text
                for w in _WORD.findall(text)
            }
            close = difflib.get_close_matches(word.lower(), sorted(vocabulary), n=5, cutoff=0.6)
            hint = f"closest words: {', '.join(map(repr, close))}" if close else "no word is close to it"
            raise ValueError(f"no question or option contains the keyword {word!r}; {hint}")
        mask = hits if mask is None else pc.or_(mask, hits)
    return mask


def _closest(value: str, existing: Iterable[str]) -> str:
    existing = sorted(existing)
    close = difflib.get_close_matches(value, existing, n=5, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(value.lower(), [e.lower() for e in existing], n=5, cutoff=0.5)
        close = [e for e in existing if e.lower() in close]
    if close:
        return "closest existing: " + ", ".join(map(repr, close))
    shown = ", ".join(map(repr, existing[:10]))
    return f"existing values: {shown}{', ...' if len(existing) > 10 else ''} (gmai-hf tree lists them all)"
