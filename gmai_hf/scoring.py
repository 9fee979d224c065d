"""The metric's core: overall, per-dimension and per-tree-node accuracy with Wilson intervals.

One function, :func:`compute`, used both by the ``evaluate`` metric (``metrics/gmai_mmbench``) and by
the runner, so a run's ``results.json`` and ``evaluate.load(...).compute(...)`` give the same numbers.
Answers are read by :func:`choose`: :mod:`gmai_hf.matching` (VLMEvalKit's exact matching by
default), then, if one is given, the LLM judge (:mod:`gmai_hf.judge`) for what matching could not
read; an unmatched answer or a refusal scores as wrong and is counted in ``unmatched``.

Beside every accuracy stands ``chance``: the expected accuracy of a uniform guess among the options
each question shows, exactly, as the leaderboard's Random row is: 1/number of options shown where
the answer is one of them, 0 where it is not (an answer option the protocol does not show, such as
a cell pandas reads as missing, cannot be guessed); their mean.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gmai_hf import schema
from gmai_hf.matching import Options, check_mode, chosen_letter, infer_choices, present_options
from gmai_hf.tree import NONE_LABEL, nest

if TYPE_CHECKING:
    from gmai_hf.judge import Judge

logger = logging.getLogger(__name__)

#: Two-sided 95% normal quantile, for the Wilson score interval.
Z95 = 1.959963984540054

Column = Sequence[str | None] | None


def wilson_interval(correct: int, total: int, z: float = Z95) -> list[float]:
    """Wilson score interval of a proportion: unlike the normal approximation it stays inside
    [0, 1] and is sensible for the small groups of the tree (a few questions per category)."""
    if total <= 0:
        raise ValueError(f"a confidence interval needs at least one question, got total={total}")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # the bounds are exactly 0 and 1 at the extremes; don't let rounding say 0.9999999999999999
    return [0.0 if correct == 0 else centre - half, 1.0 if correct == total else centre + half]


#: How a question's letter was found: by exact matching, by the judge, or not at all.
MATCHED_BY: tuple[str, ...] = ("exact", "judge", "judge_failed")


def choose(
    predictions: Sequence[str | None],
    choices: Sequence[Mapping[str, str | None]],
    matching: str = "vlmevalkit",
    judge: Judge | None = None,
    questions: Sequence[str | None] | None = None,
) -> tuple[list[str | None], list[str | None]]:
    """The letter each prediction chooses (None: none, or a refusal), and how it was found.

    Exact matching first; what it cannot read at all (``can_infer`` False, not a refusal) goes to
    ``judge`` when one is given, as VLMEvalKit does. A ``None`` prediction is a question that got no
    answer (it failed): nothing to read, so it is never judged. ``how`` is one of :data:`MATCHED_BY`
    or None.
    """
    raw = [infer_choices(p, c, matching) for p, c in zip(predictions, choices, strict=True)]
    how: list[str | None] = ["exact" if value else None for value in raw]
    if judge is not None:
        if questions is None:
            raise ValueError("the judge needs each question's text: pass questions=[...]")
        unread = [i for i, value in enumerate(raw) if value is False and predictions[i] is not None]
        items = [(str(questions[i] or ""), choices[i], str(predictions[i] or "")) for i in unread]
        for i, verdict in zip(unread, judge.decide(items), strict=True):
            raw[i] = verdict.letter or False
            how[i] = "judge" if verdict.letter else "judge_failed"
    chosen = [chosen_letter(value) for value in raw]
    return chosen, how


def compute(
    predictions: Sequence[str | None],
    references: Sequence[str] | None,
    options: Sequence[Options | None] | None = None,
    clinical_vqa_task: Column = None,
    department: Column = None,
    perceptual_granularity: Column = None,
    modality: Column = None,
    category: Column = None,
    matching: str = "vlmevalkit",
    judge: Judge | None = None,
    questions: Column = None,
    chosen: Sequence[str | None] | None = None,
    hidden: Sequence[Collection[str]] | None = None,
) -> dict[str, Any]:
    """Score raw model outputs (or letters) against answer letters.

    ``options``: per question its option texts in letter order (A first; absent ones left out or
    ``None``) or a letter->text mapping; without them only letters can be matched. The five
    dimension columns are optional; ``by[dim]`` is returned for each given one, and ``tree[view]``
    for each given view when ``modality`` and ``category`` are given too. ``references=None``
    (test split, answers hidden) returns only ``total`` and ``unmatched``, the rest ``None``.
    Missing dimension values are grouped under :data:`gmai_hf.tree.NONE_LABEL`. ``judge`` (with
    ``questions``, their texts) reads what exact matching cannot; ``chosen`` gives the letters
    already read (by a run that asked the judge) instead of reading them again. ``hidden``: per
    question, the letters of options the protocol did not show (``protocols.HIDDEN``); an answer
    among them is expected to be unreachable, and said so once, not warned about.
    """
    check_mode(matching)
    dimensions = {
        "clinical_vqa_task": clinical_vqa_task,
        "department": department,
        "perceptual_granularity": perceptual_granularity,
        "modality": modality,
        "category": category,
    }
    total = len(predictions)
    columns = {
        "references": references,
        "options": options,
        "questions": questions,
        "chosen": chosen,
        "hidden": hidden,
    }
    for name, column in {**columns, **dimensions}.items():
        if column is not None and len(column) != total:
            raise ValueError(
                f"{name} has {len(column)} items but predictions has {total}: "
                "give one per question, in the same order"
            )
    if not total:
        raise ValueError("nothing to score: predictions is empty")
    choices_per_question = [present_options(o) for o in (options if options is not None else [None] * total)]
    if chosen is None:
        chosen, _ = choose(predictions, choices_per_question, matching, judge, questions)
    # a uniform guess's expected accuracy among the options shown, where they are known: 0 where the
    # answer is not among them (an option the protocol does not show can never be guessed)
    chances = [
        1 / len(c) if options is not None and c and (references is None or references[i] in c) else 0.0
        for i, c in enumerate(choices_per_question)
    ]
    result: dict[str, Any] = {
        "accuracy": None,
        "correct": None,
        "total": total,
        "unmatched": sum(c is None for c in chosen),
        "chance": sum(chances) / total if options is not None else None,
        "judge": judge.describe() if judge is not None else None,
        "by": None,
        "tree": None,
    }
    if references is None:
        return result
    check_references(references, choices_per_question, hidden)
    hits = [c == r for c, r in zip(chosen, references, strict=True)]
    correct = sum(hits)
    result["accuracy"] = correct / total
    result["correct"] = correct
    given = {
        name: [NONE_LABEL if v is None or v == "" else v for v in column]  # tree.label, inlined: 130k calls
        for name, column in dimensions.items()
        if column is not None
    }
    with_chance = options is not None
    result["by"] = {name: _groups(values, hits, chances, with_chance) for name, values in given.items()}
    result["tree"] = {}
    if "modality" in given and "category" in given:
        for view in schema.TREE_VIEWS:
            if view in given:
                levels = (given[view], given["modality"], given["category"])
                result["tree"][view] = _tree(levels, hits, chances, with_chance)
    return result


def check_references(
    references: Sequence[str | None],
    choices: Sequence[Mapping[str, str | None]] | None = None,
    hidden: Sequence[Collection[str]] | None = None,
) -> None:
    """Raise ``ValueError`` naming the first reference that is missing or not a letter A-E.

    Given each question's present ``choices``, an answer naming an absent option is kept (like
    VLMEvalKit, the question can never be answered right) and said once: as expected where the
    protocol hid that option (``hidden``: per question, the letters it did not show), as a
    warning otherwise (a content oddity, or options and references out of step).
    """
    absent = []
    unshown = 0
    for i, reference in enumerate(references):
        if reference is None:
            raise ValueError(
                f"references[{i}] is None: every scored question needs its answer letter "
                "(questions without answers, like the test split's, can't be scored: pass references=None "
                "to count only unmatched outputs)"
            )
        if reference not in schema.OPTION_LETTERS:
            raise ValueError(
                f"references[{i}] is {reference!r}, not an option letter: "
                f"expected one of {', '.join(schema.OPTION_LETTERS)}"
            )
        if choices is not None and reference not in choices[i]:
            if hidden is not None and reference in hidden[i]:
                unshown += 1
            else:
                absent.append(i)
    if unshown:
        logger.info(
            "%d answer(s) are an option the protocol did not show (--protocol vlmevalkit drops option "
            "cells pandas reads as missing, such as 'None', as VLMEvalKit does): scored as wrong, 0 in "
            "chance; --protocol lossless shows them",
            unshown,
        )
    if absent:
        i = absent[0]
        logger.warning(
            "%d answer(s) name an option the question does not have (first: references[%d] is %r, "
            "options %s), scored as wrong; if this is unexpected, check that options and references "
            "are in the same order",
            len(absent),
            i,
            references[i],
            ", ".join(choices[i]) or "(none)",
        )


def _node(correct: int, total: int, chance: float | None = None) -> dict[str, Any]:
    node = {"accuracy": correct / total, "correct": correct, "total": total}
    if chance is not None:
        node["chance"] = chance / total
    return node


def _groups(
    values: Sequence[str], hits: Sequence[bool], chances: Sequence[float], with_chance: bool
) -> dict[str, dict[str, Any]]:
    totals: Counter[str] = Counter()
    corrects: Counter[str] = Counter()
    chance: dict[str, float] = {}
    for (value, hit, p), n in Counter(zip(values, hits, chances, strict=True)).items():
        totals[value] += n
        corrects[value] += n * hit
        chance[value] = chance.get(value, 0.0) + n * p
    return {
        value: {
            **_node(corrects[value], n, chance[value] if with_chance else None),
            "ci95": wilson_interval(corrects[value], n),
        }
        for value, n in sorted(totals.items())
    }


def _tree(
    levels: Sequence[Sequence[str]], hits: Sequence[bool], chances: Sequence[float], with_chance: bool
) -> dict[str, dict[str, Any]]:
    leaves: dict[tuple[str, ...], tuple[float, ...]] = {}
    for (*path, hit, p), n in Counter(zip(*levels, hits, chances, strict=True)).items():
        correct, total, chance = leaves.get(tuple(path), (0, 0, 0.0))
        leaves[tuple(path)] = (correct + n * hit, total + n, chance + n * p)
    return nest(leaves, lambda stat: _node(int(stat[0]), int(stat[1]), stat[2] if with_chance else None))
