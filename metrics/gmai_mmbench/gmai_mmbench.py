"""GMAI-MMBench accuracy as an ``evaluate`` metric: a thin wrapper over ``gmai_hf.scoring.compute``.

evaluate stores every declared input in an Arrow table and requires all of them in each
``add``/``add_batch``/``compute`` call, and refuses ``None`` in a string column's first row. So
this module fills what the caller left out before delegating: a missing optional column becomes
empty strings (``[]`` for ``options``), a ``None`` value an empty string (the official TSV's
spelling of "missing"); ``_compute`` turns them back into ``None``. An optional column that is
empty for every question therefore counts as not given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate

from gmai_hf import schema, scoring
from gmai_hf.matching import present_options

_DESCRIPTION = """\
Accuracy on GMAI-MMBench, the medical multimodal multiple-choice benchmark, with answers extracted
from raw model outputs exactly as VLMEvalKit does (today's matcher, or its 2024 one), optionally
with VLMEvalKit's LLM judge for what matching cannot read (but never its random letter), overall,
per clinical VQA task, department, perceptual granularity, modality and category (Wilson 95%
intervals, and the exact accuracy of a uniform guess beside each), and along the benchmark's
lexical tree.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): raw model outputs, or bare option letters.
    references (`list` of `str`): the answer letters ("A" to "E").
    options (`list` of `list` of `str`, *optional*): per question, its option texts in letter order
        (A first), absent options left out or None; a letter->text dict also works. Without it only
        letters can be matched (option-text matching needs the texts).
    questions (`list` of `str`, *optional*): the question texts; the judge needs them.
    clinical_vqa_task, department, perceptual_granularity, modality, category (`list` of `str`,
        *optional*): the question's metadata; each given one adds `by[<name>]`.
    matching (`str`, *optional*, default "vlmevalkit"): "vlmevalkit" (VLMEvalKit's exact matching
        today), "vlmevalkit-2024" (as of commit 69268c70, when the leaderboard was measured) or
        "strict" (also refuses its known false positives, e.g. "The answer is a lesion" -> A).
    judge (`str` or `dict`, *optional*): an LLM judge on an OpenAI-compatible endpoint for the
        answers matching cannot read: a model name (endpoint from $OPENAI_BASE_URL, key from
        $OPENAI_API_KEY) or {"model": ..., "base_url": ..., "api_key_env": ...}.
Returns:
    accuracy (`float`), correct (`int`), total (`int`), unmatched (`int`: no option extracted,
    refusals and judge failures included; scored as wrong), chance (`float`: a uniform guess's
    exact expected accuracy among the options shown, 0 where the answer is not shown; when options
    are given), judge (`dict`: the judge's model, prompt hash,
    calls, cached, decided and failed counts, or None), by (`dict`: by[dim][value] = accuracy,
    correct, total, ci95, chance), tree (`dict`: tree[view][value] = accuracy, correct, total,
    chance, children by modality, then category; for each given view when modality and category
    are given).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("metrics/gmai_mmbench")
    >>> result = metric.compute(
    ...     predictions=["B", "The answer is (C)", "It is MRI", "I am not sure"],
    ...     references=["B", "C", "B", "A"],
    ...     options=[["CT", "MRI", "X-ray"]] * 4,
    ... )
    >>> result["accuracy"], result["unmatched"]
    (0.75, 1)
"""

_OPTIONAL: tuple[str, ...] = ("options", "questions", *schema.BREAKDOWN_DIMENSIONS)
#: Settings (not per-question inputs) that ``compute`` passes on to ``_compute``.
_SETTINGS: tuple[str, ...] = ("matching", "judge")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GmaiMmbench(evaluate.Metric):
    """GMAI-MMBench accuracy, VLMEvalKit-exact, with per-dimension and per-tree-node breakdowns."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=schema.CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "options": datasets.Sequence(datasets.Value("string")),
                    "questions": datasets.Value("string"),
                    **{dim: datasets.Value("string") for dim in schema.BREAKDOWN_DIMENSIONS},
                }
            ),
            homepage=schema.HOMEPAGE,
            reference_urls=[
                "https://arxiv.org/abs/2408.03361",
                "https://github.com/open-compass/VLMEvalKit/blob/main/vlmeval/utils/matching_util.py",
            ],
        )

    def add_batch(
        self, *, predictions: Sequence[str | None] | None = None, references=None, **kwargs
    ) -> None:
        """Add a batch of questions; optional inputs may be left out (see the module docstring)."""
        super().add_batch(**_encode_batch(predictions, references, kwargs))

    def add(self, *, prediction: str | None = None, reference: str | None = None, **kwargs) -> None:
        """Add one question; optional inputs may be left out (see the module docstring)."""
        batch = _encode_batch([prediction], [reference], {k: [v] for k, v in kwargs.items()})
        super().add(
            prediction=batch.pop("predictions")[0],
            reference=batch.pop("references")[0],
            **{k: v[0] for k, v in batch.items()},
        )

    def compute(self, *, predictions=None, references=None, **kwargs) -> dict[str, Any] | None:
        """Score what was added, plus any questions given here (optional inputs may be left out)."""
        inputs = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTIONAL}
        if set(kwargs) - set(_SETTINGS):
            raise ValueError(
                f"unknown inputs {sorted(set(kwargs) - set(_SETTINGS))}: the optional inputs are "
                f"{', '.join(_OPTIONAL)}, and the settings {', '.join(_SETTINGS)}"
            )
        if predictions is None and references is None and not inputs:
            return super().compute(**kwargs)  # everything came through add/add_batch
        return super().compute(**_encode_batch(predictions, references, inputs), **kwargs)

    def _compute(
        self,
        predictions: list[str],
        references: list[str],
        options: list[list[str]],
        questions: list[str],
        matching: str = "vlmevalkit",
        judge: Any = None,
        **dimensions: list[str],
    ) -> dict[str, Any]:
        from gmai_hf.judge import Judge

        given = {name: _decode(column) for name, column in dimensions.items()}
        return scoring.compute(
            predictions,
            references,
            options=[o or None for o in options] if any(options) else None,
            matching=matching,
            judge=Judge.from_options(judge, matching_mode=matching),
            questions=_decode(questions),
            **given,
        )


def _encode_batch(predictions: Any, references: Any, inputs: dict[str, Any]) -> dict[str, list]:
    """The batch evaluate needs: every declared column present, no ``None`` in string columns.

    Idempotent: evaluate's ``compute`` passes its inputs through ``add_batch`` again.
    """
    if predictions is None or references is None:
        raise ValueError("give both predictions and references (one answer letter per question)")
    unknown = sorted(set(inputs) - set(_OPTIONAL))
    if unknown:
        raise ValueError(f"unknown inputs {unknown}: the optional inputs are {', '.join(_OPTIONAL)}")
    n = len(predictions)
    for name, column in {"references": references, **inputs}.items():
        if column is not None and len(column) != n:
            raise ValueError(f"{name} has {len(column)} items but predictions has {n}: give one per question")
    scoring.check_references(references)
    options = inputs.get("options")
    batch: dict[str, list] = {
        "predictions": ["" if p is None else p for p in predictions],
        "references": list(references),
        "options": [_option_list(o) if o else [] for o in options] if options is not None else [[]] * n,
    }
    for name in ("questions", *schema.BREAKDOWN_DIMENSIONS):
        column = inputs.get(name)
        batch[name] = ["" if v is None else v for v in column] if column is not None else [""] * n
    return batch


def _option_list(options: Any) -> list[str]:
    present = present_options(options)
    return [present.get(letter) or "" for letter in schema.OPTION_LETTERS]


def _decode(column: list[str]) -> list[str | None] | None:
    return [v or None for v in column] if any(column) else None
