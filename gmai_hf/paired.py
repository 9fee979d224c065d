"""Paired statistics for two models on the same questions: is A really better than B, and where?

Both models answered the same questions, so each question is a pair (A right?, B right?). Only
the discordant pairs carry information about a difference:

- **McNemar's exact test**: under "no difference" each discordant pair is A's with probability
  1/2, so ``a_only`` is Binomial(``a_only + b_only``, 1/2); two-sided p-value from
  ``scipy.stats.binomtest``;
- **Newcombe's hybrid score interval** (method 10 of Newcombe, Statistics in Medicine 1998) for
  the difference of paired proportions: it combines the two Wilson intervals with the pairs'
  correlation, stays inside [-1, 1] and behaves at the small node sizes of the tree;
- **Benjamini-Hochberg** adjustment (``scipy.stats.false_discovery_control``) over every node
  tested together: among the nodes called significant, the expected share of false discoveries is
  at most ``alpha``. Chosen over Holm's family-wise control because a comparison tests hundreds
  of nodes, of which Holm would flag almost none at realistic sizes; nodes holding the very same
  questions (a task with a single modality, say) count once.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gmai_hf.scoring import wilson_interval

#: Two-sided tests at this level unless told otherwise.
ALPHA = 0.05


@dataclass(frozen=True)
class Pairs:
    """The 2x2 table of one node: both right, only A right, only B right, both wrong."""

    both: int
    a_only: int
    b_only: int
    neither: int

    @classmethod
    def count(cls, a_hits: Sequence[bool], b_hits: Sequence[bool]) -> Pairs:
        both = a_only = b_only = neither = 0
        for a, b in zip(a_hits, b_hits, strict=True):
            if a and b:
                both += 1
            elif a:
                a_only += 1
            elif b:
                b_only += 1
            else:
                neither += 1
        return cls(both, a_only, b_only, neither)

    @property
    def n(self) -> int:
        return self.both + self.a_only + self.b_only + self.neither


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value (1.0 without discordant pairs)."""
    if a_only + b_only == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(a_only, a_only + b_only, 0.5, alternative="two-sided").pvalue)


def newcombe_interval(pairs: Pairs) -> tuple[float, float]:
    """95% interval of accuracy(A) - accuracy(B) on paired answers (Newcombe's method 10)."""
    n = pairs.n
    if n == 0:
        raise ValueError("an interval needs at least one question")
    p1 = (pairs.both + pairs.a_only) / n
    p2 = (pairs.both + pairs.b_only) / n
    l1, u1 = wilson_interval(pairs.both + pairs.a_only, n)
    l2, u2 = wilson_interval(pairs.both + pairs.b_only, n)
    margins = (
        (pairs.both + pairs.a_only)
        * (pairs.b_only + pairs.neither)
        * (pairs.both + pairs.b_only)
        * (pairs.a_only + pairs.neither)
    )
    phi = (
        0.0
        if margins == 0
        else (pairs.both * pairs.neither - pairs.a_only * pairs.b_only) / math.sqrt(margins)
    )
    delta = p1 - p2
    lower = delta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = delta + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def smallest_decisive(alpha: float = ALPHA) -> int:
    """The fewest discordant pairs that can reach ``p < alpha`` at all (all of them one way): 6 at 0.05."""
    k = 1
    while 2 * 0.5**k >= alpha:
        k += 1
    return k


def compare_node(pairs: Pairs) -> dict[str, Any]:
    """One node's comparison, before adjustment (``p_adjusted``/``significant`` are set by :func:`adjust`)."""
    n = pairs.n
    accuracy_a = (pairs.both + pairs.a_only) / n
    accuracy_b = (pairs.both + pairs.b_only) / n
    return {
        "n": n,
        "accuracy_a": accuracy_a,
        "accuracy_b": accuracy_b,
        "difference": accuracy_a - accuracy_b,
        "ci95": list(newcombe_interval(pairs)),
        "a_only": pairs.a_only,
        "b_only": pairs.b_only,
        "p_value": mcnemar_exact(pairs.a_only, pairs.b_only),
        "p_adjusted": None,
        "significant": None,
    }


def adjust(
    nodes: Mapping[Hashable, dict[str, Any]], groups: Mapping[Hashable, Hashable] | None, alpha: float
) -> None:
    """Benjamini-Hochberg over ``nodes`` (in place): one test per distinct ``groups`` value (the
    question set a node holds), so nodes holding the same questions are one test, not several;
    ``groups=None``: every node is a test of its own."""
    from scipy.stats import false_discovery_control

    group = (lambda key: key) if groups is None else groups.__getitem__
    tests: dict[Hashable, float] = {}
    for key, node in nodes.items():
        tests.setdefault(group(key), node["p_value"])
    if not tests:
        return
    adjusted = dict(zip(tests, false_discovery_control(list(tests.values()), method="bh"), strict=True))
    for key, node in nodes.items():
        node["p_adjusted"] = float(min(1.0, adjusted[group(key)]))
        node["significant"] = bool(node["p_adjusted"] < alpha)
