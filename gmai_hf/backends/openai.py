"""``--backend openai``: any OpenAI-compatible chat-completions server.

vLLM, SGLang, LMDeploy, TGI, ``transformers serve``, Ollama and hosted APIs (GPT-4o, Gemini and
Claude through their OpenAI-compatible endpoints) all speak this API, so one backend reaches
every model they serve, remote-code models included. One request per question: a single user
message holding the image (a ``data:`` URL of the bytes the protocol gives: VLMEvalKit's JPEG,
or the original file under ``--protocol lossless``) and then the prompt text, exactly as the
transformers backend builds it; ``temperature`` 0, ``max_tokens`` = ``--max-new-tokens``,
``seed`` fixed. Requests, retries and accounting are :class:`gmai_hf.client.ChatClient`'s.
"""

from __future__ import annotations

import base64
import io
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from gmai_hf import schema
from gmai_hf.backends.base import Answer, Backend, Batch, Failed, Prepared, Question, QuestionError
from gmai_hf.client import ChatClient, ClientOptions


def mime_type(data: bytes) -> str:
    """The MIME type of an image file's bytes (PNG, JPEG, GIF, BMP, WebP: what servers take)."""
    kind = schema.image_kind(data)
    if kind is None or kind == "TIFF":
        raise QuestionError("the image is in a format servers do not take (not PNG, JPEG, GIF, BMP or WebP)")
    return f"image/{kind.lower()}"


class OpenAIPreparer:
    """The request content of one question (picklable: runs in DataLoader workers)."""

    def __init__(self, max_image_side: int | None = None) -> None:
        self.max_image_side = max_image_side

    def image_bytes(self, question: Question) -> bytes:
        """The image to send: as given, or downscaled (same format) past ``max_image_side``."""
        data = question.image_bytes
        if data is None:
            raise QuestionError(f"question {question.index} has no image")
        if not self.max_image_side:
            return data
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) <= self.max_image_side:
                return data
            fmt = image.format or "PNG"
            image.load()
            image.thumbnail((self.max_image_side, self.max_image_side))
            buffer = io.BytesIO()
            image.save(buffer, format=fmt)
        return buffer.getvalue()

    def __call__(self, question: Question) -> Prepared:
        data = self.image_bytes(question)
        url = f"data:{mime_type(data)};base64,{base64.b64encode(data).decode('ascii')}"
        image_url = {"url": url, **({"detail": question.detail} if question.detail else {})}
        lead = [{"type": "text", "text": question.lead}]
        content = [
            *lead[: bool(question.lead)],
            {"type": "image_url", "image_url": image_url},
            {"type": "text", "text": question.prompt},
        ]
        system = [{"role": "system", "content": question.system}]
        return Prepared(
            index=question.index,
            letters=tuple(question.options),
            features={"messages": [*system[: bool(question.system)], {"role": "user", "content": content}]},
            cost=len(question.prompt),
        )


class OpenAIBackend(Backend):
    """The model behind an OpenAI-compatible endpoint; answers arrive as soon as each is ready."""

    def __init__(
        self,
        model: str,
        options: ClientOptions | None = None,
        *,
        seed: int = 0,
        max_image_side: int | None = None,
    ) -> None:
        if max_image_side is not None and max_image_side < 1:
            raise ValueError(f"--max-image-side must be a positive number of pixels, got {max_image_side}")
        self.client = ChatClient(model, options, seed=seed)
        self.max_image_side = max_image_side
        self.client.check()

    def preparer(self) -> OpenAIPreparer:
        return OpenAIPreparer(self.max_image_side)

    def answers(self, batches: Iterable[Batch], mode: str, max_new_tokens: int) -> Iterator[Answer]:
        if mode != "generate":
            raise ValueError(
                "--mode likelihood needs the model's next-token probabilities, which chat-completions "
                "servers do not give for images: use --mode generate with --backend openai"
            )
        failed: deque[Failed] = deque()

        def requests() -> Iterator[tuple[int, list[dict[str, Any]], int]]:
            for batch in batches:
                for item in batch:
                    if isinstance(item, Failed):
                        failed.append(item)
                    else:
                        yield item.index, item.features["messages"], max_new_tokens

        def flush() -> Iterator[Answer]:
            while failed:
                item = failed.popleft()
                yield Answer(item.index, None, error=item.error)

        for reply in self.client.stream(requests()):
            yield from flush()
            yield Answer(
                reply.key,
                None if reply.text is None else reply.text.strip(),  # as the transformers backend does
                error=reply.error,
                retry=reply.retry,
                truncated=reply.finish_reason == "length",
                usage=reply.usage,
            )
        yield from flush()

    def describe(self) -> dict[str, Any]:
        return {"engine": "openai", **self.client.describe(), "max_image_side": self.max_image_side}
