"""The narrow interface between the runner and a model engine.

The runner only shards, resumes and records; everything model-specific sits behind
:class:`Backend`. Work is split in two so that slow input preparation (image decoding, resizing,
tokenizing, base64) runs in DataLoader worker processes while the model runs:
:meth:`Backend.preparer` returns a small picklable callable used in the workers, and
:meth:`Backend.answers` turns a stream of prepared batches into a stream of :class:`Answer`.

Two kinds of engine fill it:

- batch engines (transformers, the random baseline) implement :meth:`Backend.generate` and
  :meth:`Backend.score_letters` on whole batches; the default :meth:`Backend.answers` calls them,
  halving the batch on out-of-memory errors;
- request engines (an OpenAI-compatible server) override :meth:`Backend.answers` to keep many
  requests in flight and yield each answer as soon as it arrives.
"""

from __future__ import annotations

import io
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

logger = logging.getLogger(__name__)

#: What ``--mode`` can ask of a backend.
MODES: tuple[str, ...] = ("generate", "likelihood")


class QuestionError(Exception):
    """This question cannot be answered (e.g. its prompt is too long): record it and go on."""


@dataclass
class Question:
    """One question as a backend sees it: prompt text, present options and the image.

    ``image_bytes`` is the image file as the run's protocol presents it (the original bytes, or
    VLMEvalKit's JPEG re-encoding); :attr:`image` decodes it to RGB on first use, so a backend
    that sends bytes (an API) never pays for decoding.
    """

    index: int
    prompt: str
    options: dict[str, str]
    image_bytes: bytes | None = None
    #: The system prompt the run's VLMEvalKit wrapper sets, if any.
    system: str | None = None
    #: Text before the image in the user turn, where the wrapper puts an instruction there (MiniCPM).
    lead: str | None = None
    #: The ``detail`` of the image an OpenAI-style VLMEvalKit wrapper sends (GPT4V: ``low``).
    detail: str | None = None

    @cached_property
    def image(self) -> Any:
        """The image as an RGB ``PIL.Image``; :class:`QuestionError` when it cannot be decoded."""
        from PIL import Image

        if self.image_bytes is None:
            raise QuestionError(f"question {self.index} has no image")
        try:
            with Image.open(io.BytesIO(self.image_bytes)) as image:
                image.load()
                return image.convert("RGB")
        except Exception as error:
            raise QuestionError(
                f"image of question {self.index} cannot be decoded ({type(error).__name__}: {error}); "
                "the data file may be damaged: re-download or re-export it"
            ) from error


@dataclass
class Prepared:
    """A question after preparation, ready to be batched; ``features`` is backend-specific.

    ``cost`` orders questions into batches of similar size (tokens the processor produced, or
    prompt characters where nothing was tokenized).
    """

    index: int
    letters: tuple[str, ...]
    features: dict[str, Any] = field(default_factory=dict)
    cost: int = 0


@dataclass
class Failed:
    """A question that could not be prepared, with the reason (recorded, scored as wrong)."""

    index: int
    error: str


@dataclass
class Answer:
    """What a backend made of one question.

    ``text`` is the raw output (``None`` when the question failed: ``error`` says why, and
    ``retry`` whether a rerun may succeed, e.g. a server error rather than a broken image).
    ``truncated``: generation stopped at the token limit. ``usage``: request accounting of API
    engines (``requests``, ``retries``, ``prompt_tokens``, ``completion_tokens``).
    """

    index: int
    text: str | None
    error: str | None = None
    retry: bool = False
    truncated: bool = False
    usage: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """The line the runner appends to its answer file."""
        line: dict[str, Any] = {"index": self.index, "prediction": self.text or "", "error": self.error}
        if self.retry:
            line["retry"] = True
        if self.truncated:
            line["truncated"] = True
        if self.usage:
            line["usage"] = self.usage
        return line


Batch = Sequence["Prepared | Failed"]


class Backend(ABC):
    """A model engine. ``answers`` turns prepared batches into answers, one per question."""

    #: Whether questions must carry their image (the random baseline needs none).
    needs_image: bool = True

    #: Questions per call of ``generate``/``score_letters`` (the runner sets it; halved on OOM).
    batch_limit: int = 8

    #: Beams for generation: 1 (greedy) unless the run's VLMEvalKit wrapper fixes more (MiniCPM-V).
    num_beams: int = 1

    #: Image-processor settings the run's VLMEvalKit wrapper fixes (InternVL's tiles); in-process only.
    processor_kwargs: dict[str, Any] | None = None

    #: Prepared batches held back and re-sorted by their token counts before answering, so a
    #: batch holds questions of similar size also where the image, not the prompt, sets it
    #: (dynamic-resolution models); the runner planned batches by prompt length only.
    lookahead_batches: int = 4

    @abstractmethod
    def preparer(self) -> Callable[[Question], Prepared]:
        """A picklable function run in DataLoader workers; raises :class:`QuestionError`."""

    def generate(self, items: Sequence[Prepared], max_new_tokens: int) -> list[Answer]:
        """Greedy answers for a batch (batch engines)."""
        raise NotImplementedError(f"{type(self).__name__} does not generate in batches")

    def score_letters(self, items: Sequence[Prepared]) -> list[str]:
        """For each item, its present option letter the model finds most likely as the next token."""
        raise NotImplementedError(f"{type(self).__name__} cannot score option letters (--mode likelihood)")

    def is_out_of_memory(self, error: BaseException) -> bool:
        """Whether ``error`` means the batch did not fit (the batch is then halved and retried)."""
        return False

    def describe(self) -> dict[str, Any]:
        """What to record about the engine in ``results.json`` (dtype, device, server, ...)."""
        return {}

    def answers(self, batches: Iterable[Batch], mode: str, max_new_tokens: int) -> Iterator[Answer]:
        """One :class:`Answer` per question of ``batches``, in any order, as soon as each is known."""
        waiting: list[Prepared] = []
        held = 0
        for batch in batches:
            for item in batch:
                if isinstance(item, Failed):
                    yield Answer(item.index, None, error=item.error)
                else:
                    waiting.append(item)
            held += 1
            if held >= self.lookahead_batches:
                yield from self._answer_sorted(waiting, mode, max_new_tokens)
                waiting, held = [], 0
        yield from self._answer_sorted(waiting, mode, max_new_tokens)

    def _answer_sorted(self, items: list[Prepared], mode: str, max_new_tokens: int) -> Iterator[Answer]:
        items.sort(key=lambda item: -item.cost)
        yield from self.answer_batch(items, mode, max_new_tokens)

    def answer_batch(self, items: Sequence[Prepared], mode: str, max_new_tokens: int) -> list[Answer]:
        """Answers for ``items``, in chunks of at most :attr:`batch_limit`, halving it (for the rest of
        the run) on out-of-memory; a question that does not fit even alone fails (retryable)."""
        answers: list[Answer] = []
        start = 0
        while start < len(items):
            chunk = items[start : start + self.batch_limit]
            try:
                if mode == "likelihood":
                    letters = self.score_letters(chunk)
                    answers += [
                        Answer(item.index, letter) for item, letter in zip(chunk, letters, strict=True)
                    ]
                else:
                    answers += self.generate(chunk, max_new_tokens)
            except Exception as error:
                if not self.is_out_of_memory(error):
                    raise
                if len(chunk) > 1:
                    self.batch_limit = (len(chunk) + 1) // 2
                    logger.warning(
                        "out of memory with %d questions; now %d at a time", len(chunk), self.batch_limit
                    )
                    continue
                answers.append(
                    Answer(
                        chunk[0].index,
                        None,
                        error=f"question {chunk[0].index} does not fit in memory even alone",
                        retry=True,
                    )
                )
            start += len(chunk)
        return answers
