"""Any transformers image-text-to-text model: ``AutoProcessor`` + ``AutoModelForImageTextToText``.

Each question becomes one user message (the image, then the prompt text), the processor's chat
template is applied with the generation prompt, sequences are left-padded, and decoding is greedy.
Inputs are prepared one question at a time in DataLoader workers and padded into batches here,
so a batch can be split again (after an out-of-memory error) without preparing it twice.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gmai_hf import schema
from gmai_hf.backends.base import Answer, Backend, Prepared, Question, QuestionError

logger = logging.getLogger(__name__)

#: Processor outputs whose dimension 1 runs over the tokens: left-padded to the longest prompt
#: (``input_ids`` with the pad token, the others with 0). Mllama's ``cross_attention_mask`` is
#: ``(batch, tokens, images, tiles)``.
SEQUENCE_KEYS = frozenset(
    {"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "cross_attention_mask"}
)

#: Processors that build the model's prompt format themselves and define no chat template
#: (PaliGemma: image tokens, BOS, the prompt, then a newline); they get the bare prompt text.
SELF_FORMATTING_PROCESSORS = frozenset({"PaliGemmaProcessor"})

#: Processor outputs meant for training (PaliGemma always returns ``labels``); never passed on.
TRAINING_KEYS = frozenset({"labels"})

DTYPES: tuple[str, ...] = ("auto", "bfloat16", "float16", "float32")


class HFPreparer:
    """Chat template + processor for one question (picklable: runs in DataLoader workers)."""

    def __init__(
        self, processor: Any, max_positions: int | None, reserved_tokens: int, use_chat_template: bool = True
    ) -> None:
        self.processor = processor
        self.max_positions = max_positions
        self.reserved_tokens = reserved_tokens
        self.use_chat_template = use_chat_template

    def __call__(self, question: Question) -> Prepared:
        kwargs: dict[str, Any] = {}
        if self.use_chat_template:
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question.prompt}]}
            ]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            # as ``processor.apply_chat_template(tokenize=True)`` does: a template that writes the BOS
            # token itself (Gemma 3, Llama 3) must not get a second one from the tokenizer
            bos = getattr(getattr(self.processor, "tokenizer", None), "bos_token", None)
            if bos and text.startswith(bos):
                kwargs["add_special_tokens"] = False
        else:
            # the image placeholder first, the rest is the processor's job
            text = f"{getattr(self.processor, 'image_token', '')}{question.prompt}"
        # images nested per sample (one list per text), the form every processor accepts
        image = question.image  # decoded here, in the worker
        features = dict(self.processor(images=[[image]], text=[text], return_tensors="pt", **kwargs))
        for key in [
            key for key, value in features.items() if key in TRAINING_KEYS or not hasattr(value, "shape")
        ]:
            # training targets, and lists of per-image metadata some processors add (not model inputs)
            del features[key]
        length = int(features["input_ids"].shape[1])
        if self.max_positions and length + self.reserved_tokens > self.max_positions:
            raise QuestionError(
                f"prompt is {length} tokens; with {self.reserved_tokens} new tokens it exceeds the model's "
                f"{self.max_positions} positions (lower --max-new-tokens or use a longer-context model)"
            )
        return Prepared(index=question.index, letters=tuple(question.options), features=features, cost=length)


def letter_token_ids(tokenizer: Any) -> dict[str, list[int]]:
    """Token ids a model may emit for each option letter right after the generation prompt.

    Depending on the tokenizer and the template, the letter comes as ``A`` or as `` A`` (with
    its leading space, one token in byte-level BPE when merged, ``▁A`` in SentencePiece); every
    single-token spelling that decodes to exactly the letter counts, and their probabilities add.
    """
    found: dict[str, list[int]] = {}
    for letter in schema.OPTION_LETTERS:
        candidates = set()
        for text in (letter, " " + letter):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1:
                candidates.add(ids[0])
        direct = tokenizer.convert_tokens_to_ids(letter)
        if isinstance(direct, int) and direct != tokenizer.unk_token_id:
            candidates.add(direct)
        ids = sorted(i for i in candidates if tokenizer.decode([i]).strip() == letter)
        if not ids:
            raise ValueError(
                f"the tokenizer has no single token for the option letter {letter!r}, which "
                "--mode likelihood needs; use --mode generate with this model"
            )
        found[letter] = ids
    return found


#: Seconds the Hub may take to answer whether a model exists before we give up on it.
HUB_CHECK_TIMEOUT_S = 10.0

SERVE_HINT = "serve it with vLLM or SGLang (`vllm serve MODEL`) and evaluate it with --backend openai"


def locate_model(model_id: str) -> bool:
    """Whether to load ``model_id`` from local files only; fails fast when it cannot be had.

    transformers retries an unreachable Hub for minutes before it says so, without naming the
    model. One quick request first: a local folder needs none; offline (``HF_HUB_OFFLINE``), or
    with the Hub out of reach, a model in the local cache is used as it is and any other fails
    at once, naming the model and the way out.
    """
    if Path(model_id).is_dir():
        return True
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    local = f"or pass --model /path/to/a/folder holding it (e.g. from `hf download {model_id}`)"
    try:
        cached = isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except HFValidationError:
        raise OSError(
            f"--model {model_id!r} is neither a folder nor a Hugging Face Hub model id (owner/name): "
            "check the path"
        ) from None
    if constants.HF_HUB_OFFLINE:
        if cached:
            return True
        raise OSError(
            f"{model_id}: not in the local Hub cache, and the Hub is off (HF_HUB_OFFLINE=1): {local}"
        )
    try:
        model_info(model_id, timeout=HUB_CHECK_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise OSError(
            f"{model_id}: no such model on the Hugging Face Hub (or it is private: log in with "
            "`hf auth login`); "
            f"check the name, {local}"
        ) from None
    except HfHubHTTPError:
        return False  # e.g. a gated model: the download says what to do
    except Exception as error:  # no connection (DNS, refused, timeout): the client's own types
        if cached:
            logger.warning(
                "the Hugging Face Hub cannot be reached (%s); using the cached copy of %s", error, model_id
            )
            return True
        raise OSError(
            f"{model_id}: cannot reach the Hugging Face Hub ({error}) to download it; connect, {local}"
        ) from None
    return False


class HFBackend(Backend):
    """A transformers vision-language model on one device (one copy per process)."""

    def __init__(
        self,
        model_id: str,
        device: Any,
        *,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        reserved_tokens: int = 1,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        self.device = torch.device(device)
        local = locate_model(model_id)
        self.processor = AutoProcessor.from_pretrained(
            model_id, trust_remote_code=trust_remote_code, local_files_only=local
        )
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None or getattr(self.processor, "image_processor", None) is None:
            raise ValueError(
                f"{model_id}: AutoProcessor gives a {type(self.processor).__name__}, not an image processor "
                "with a tokenizer: transformers cannot run it as an image-text-to-text model here (a "
                "text-only model, or one whose processor needs its own code); if it is a vision-language "
                f"model, {SERVE_HINT}"
            )
        self.use_chat_template = bool(
            getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        )
        if not self.use_chat_template and type(self.processor).__name__ not in SELF_FORMATTING_PROCESSORS:
            raise ValueError(
                f"{model_id}: the processor ({type(self.processor).__name__}) has no chat template; the "
                "runner needs an instruction-tuned image-text-to-text model whose processor defines one "
                f"(or one that formats prompts itself: {', '.join(sorted(SELF_FORMATTING_PROCESSORS))})"
            )
        self.tokenizer.padding_side = "left"
        # padded positions are masked out, so any id will do when the tokenizer names none
        self.pad_token_id = next(
            (i for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) if i is not None), 0
        )
        self.dtype = self._resolve_dtype(dtype)
        # weights go straight to this process's device (no full copy in host memory per process)
        kwargs = {
            "dtype": self.dtype,
            "trust_remote_code": trust_remote_code,
            "device_map": str(self.device),
            "local_files_only": local,
        }
        try:
            try:
                model = AutoModelForImageTextToText.from_pretrained(
                    model_id, attn_implementation="sdpa", **kwargs
                )
            except ValueError as error:
                if "sdpa" not in str(error).lower():
                    raise
                logger.warning("%s does not support SDPA attention; using its default attention", model_id)
                model = AutoModelForImageTextToText.from_pretrained(model_id, **kwargs)
        except ValueError as error:
            if "Unrecognized configuration class" not in str(error):
                raise
            found = re.search(r"class '(?:[\w.]+\.)?(\w+)'", str(error))
            raise ValueError(
                f"{model_id}: transformers has no image-text-to-text model for its configuration "
                f"({found[1] if found else 'unrecognized'}); {SERVE_HINT}"
            ) from None
        self.model = model.eval()
        text_config = self.model.config.get_text_config()
        self.max_positions = getattr(text_config, "max_position_embeddings", None)
        self.reserved_tokens = reserved_tokens
        self.eos_token_id = self.model.generation_config.eos_token_id
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        self.stop_ids = [i for i in eos if i is not None] or [self.pad_token_id]
        forward = inspect.signature(self.model.forward).parameters
        self.keeps_logits = "logits_to_keep" in forward
        self._letter_ids: dict[str, list[int]] | None = None

    def _resolve_dtype(self, dtype: str) -> Any:
        torch = self.torch
        if dtype not in DTYPES:
            raise ValueError(f"unknown --dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        if dtype == "auto":
            on_gpu = self.device.type == "cuda"
            return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
        return getattr(torch, dtype)

    def preparer(self) -> HFPreparer:
        return HFPreparer(self.processor, self.max_positions, self.reserved_tokens, self.use_chat_template)

    def collate(self, items: Sequence[Prepared]) -> dict[str, Any]:
        """Batch the items' processor outputs and move them to the device.

        Per-token tensors (:data:`SEQUENCE_KEYS`) are left-padded along the tokens. Any other tensor
        is concatenated along dimension 0; where the items' shapes differ beyond it (the number of
        image tiles or crops depends on the image's size in Idefics3 / SmolVLM, LLaVA-NeXT and
        Mllama), it is zero-padded at the end, as the processors themselves pad a batch: those
        models skip all-zero tiles or use ``image_sizes`` / masks to ignore the padding.
        """
        torch = self.torch
        batch: dict[str, Any] = {}
        for key, first in items[0].features.items():
            values = [item.features.get(key) for item in items]
            if not all(isinstance(value, torch.Tensor) for value in values):
                raise TypeError(f"processor output {key!r} is not a tensor in every item; not supported")
            if len({value.dim() for value in values}) != 1:
                raise ValueError(f"processor output {key!r} has a different number of dimensions per item")
            shape = [max(int(value.shape[d]) for value in values) for d in range(first.dim())]
            sequence = key in SEQUENCE_KEYS or (
                # an unknown per-token mask or id tensor: as long as the prompt in every item
                key.endswith(("_mask", "_ids"))
                and first.dim() >= 2
                and all(
                    value.shape[1] == item.features["input_ids"].shape[1]
                    for value, item in zip(values, items, strict=True)
                )
            )
            fill = self.pad_token_id if key == "input_ids" else 0
            rows = []
            for value in values:
                if list(value.shape[1:]) != shape[1:]:
                    padded = value.new_full((value.shape[0], *shape[1:]), fill)
                    region = [slice(None)] + [slice(0, int(size)) for size in value.shape[1:]]
                    if sequence:  # left padding: the prompt ends at the last position
                        region[1] = slice(shape[1] - int(value.shape[1]), shape[1])
                    padded[tuple(region)] = value
                    value = padded
                rows.append(value)
            value = torch.cat(rows)
            if value.is_floating_point():
                value = value.to(self.dtype)
            batch[key] = value.to(self.device, non_blocking=True)
        return batch

    def generate(self, items: Sequence[Prepared], max_new_tokens: int) -> list[Answer]:
        from transformers import GenerationConfig

        batch = self.collate(items)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
        )
        with self.torch.inference_mode():
            output = self.model.generate(**batch, generation_config=config)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        # a sequence that filled every new position without an end-of-sequence token was cut off
        ended = self.torch.isin(new_tokens, self.torch.tensor(self.stop_ids, device=new_tokens.device))
        cut = new_tokens.shape[1] >= max_new_tokens
        return [
            Answer(item.index, text.strip(), truncated=cut and not bool(stopped.any()))
            for item, text, stopped in zip(items, texts, ended, strict=True)
        ]

    def score_letters(self, items: Sequence[Prepared]) -> list[str]:
        torch = self.torch
        if self._letter_ids is None:
            self._letter_ids = letter_token_ids(self.tokenizer)
        batch = self.collate(items)
        with torch.inference_mode():
            keep = {"logits_to_keep": 1} if self.keeps_logits else {}
            logits = self.model(**batch, **keep).logits[:, -1].float()
        log_probs = logits.log_softmax(dim=-1)
        choices = []
        for row, item in zip(log_probs, items, strict=True):
            scores = {
                letter: torch.logsumexp(row[self._letter_ids[letter]], 0).item() for letter in item.letters
            }
            choices.append(max(scores, key=scores.__getitem__) if scores else "")
        return choices

    def is_out_of_memory(self, error: BaseException) -> bool:
        return isinstance(error, self.torch.cuda.OutOfMemoryError)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "transformers",
            "architecture": type(self.model).__name__,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "attention": getattr(self.model.config, "_attn_implementation", None),
        }
