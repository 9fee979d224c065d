"""The narrow interface between the runner and a model engine.

The runner only shards, batches, resumes and records; everything model-specific sits behind
:class:`Backend`, so another engine (vLLM, an API) can be added without touching the runner.
Work is split in two so that slow input preparation (image decoding, resizing, tokenizing) runs
in DataLoader worker processes while the model runs: :meth:`Backend.preparer` returns a small
picklable callable used in the workers, and :meth:`Backend.generate` / :meth:`Backend.score_letters`
run on whole batches of its outputs in the main process of each rank.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Question:
    """One question as the backend sees it: the prompt text, the image, the present options."""

    index: int
    prompt: str
    options: dict[str, str]
    image: Any = None  # PIL.Image.Image (RGB) when the backend needs images, else None


@dataclass
class Prepared:
    """A question after preparation, ready to be batched; ``features`` is backend-specific."""

    index: int
    letters: tuple[str, ...]
    features: dict[str, Any] = field(default_factory=dict)


class QuestionError(Exception):
    """This question cannot be answered (e.g. its prompt is too long): record it and go on."""


class Backend(ABC):
    """A model engine. ``generate`` and ``score_letters`` get items from ``preparer()``."""

    #: Whether questions must carry a decoded image (the random baseline needs none).
    needs_image: bool = True

    @abstractmethod
    def preparer(self) -> Callable[[Question], Prepared]:
        """A picklable function run in DataLoader workers; raises :class:`QuestionError`."""

    @abstractmethod
    def generate(self, items: Sequence[Prepared], max_new_tokens: int) -> list[str]:
        """Greedy answers, one raw text per item."""

    @abstractmethod
    def score_letters(self, items: Sequence[Prepared]) -> list[str]:
        """For each item, its present option letter the model finds most likely as the next token."""

    def is_out_of_memory(self, error: BaseException) -> bool:
        """Whether ``error`` means the batch did not fit (the runner then halves it and retries)."""
        return False

    def describe(self) -> dict[str, Any]:
        """What to record about the engine in ``results.json`` (dtype, device, ...)."""
        return {}
