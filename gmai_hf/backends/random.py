"""``--model random``: the leaderboard's Random row, a uniform guess among the present options.

The guess for a question depends only on the seed and the question's index, so it is the same
whatever the number of processes, the batch size or how often the run was resumed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from gmai_hf.backends.base import Answer, Backend, Prepared, Question


def _prepare(question: Question) -> Prepared:
    return Prepared(index=question.index, letters=tuple(question.options))


class RandomBackend(Backend):
    """Seeded uniform choice among each question's present options; loads no model."""

    needs_image = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def preparer(self) -> Callable[[Question], Prepared]:
        return _prepare

    def _guess(self, item: Prepared) -> str:
        if not item.letters:
            return ""
        return random.Random(f"gmai-hf-random:{self.seed}:{item.index}").choice(item.letters)

    def generate(self, items: Sequence[Prepared], max_new_tokens: int) -> list[Answer]:
        return [Answer(item.index, self._guess(item)) for item in items]

    def score_letters(self, items: Sequence[Prepared]) -> list[str]:
        return [self._guess(item) for item in items]

    def describe(self) -> dict[str, Any]:
        return {"engine": "random", "seed": self.seed}
