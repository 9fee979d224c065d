"""Any transformers image-text-to-text model: ``AutoProcessor`` + ``AutoModelForImageTextToText``.

Each question becomes one user message (the image, then the prompt text), the processor's chat
template is applied with the generation prompt, sequences are left-padded, and decoding is greedy.
Inputs are prepared one question at a time in DataLoader workers and padded into batches here,
so a batch can be split again (after an out-of-memory error) without preparing it twice.
"""

from __future__ import annotations

import inspect
import logging
import os
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

#: ``--device-map`` values: ``auto`` spreads one copy of the model over this process's GPUs.
DEVICE_MAPS: tuple[str, ...] = ("auto",)


def process_gpus(
    local_rank: int, local_processes: int, gpu_count: int, gpus_per_process: int | None
) -> list[int]:
    """The GPUs one copy of the model spreads over, for ``--device-map auto``.

    Process ``local_rank`` of the node's ``local_processes`` takes the ``gpus_per_process``
    consecutive GPUs from ``local_rank * gpus_per_process`` (default: the node's GPUs shared out
    evenly), so 8 GPUs with 2 per process hold 4 copies. No GPU: an empty list (the CPU).
    """
    if gpu_count == 0:
        if gpus_per_process:
            raise ValueError(
                f"--gpus-per-process {gpus_per_process}: no GPU is visible to this process "
                "(check CUDA_VISIBLE_DEVICES, or leave the flag out to run on the CPU)"
            )
        return []
    per = max(gpus_per_process or gpu_count // local_processes, 1)
    if local_processes * per > gpu_count:
        raise ValueError(
            f"{local_processes} process(es) on this node with {per} GPU(s) each need "
            f"{local_processes * per} GPUs; {gpu_count} are visible: launch fewer processes "
            f"(accelerate launch --num_processes {max(gpu_count // per, 1)}) or lower --gpus-per-process"
        )
    return list(range(local_rank * per, (local_rank + 1) * per))


class HFPreparer:
    """Chat template + processor for one question (picklable: runs in DataLoader workers)."""

    def __init__(
        self,
        processor: Any,
        max_positions: int | None,
        use_chat_template: bool = True,
        processor_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.processor = processor
        self.max_positions = max_positions
        self.use_chat_template = use_chat_template
        self.processor_kwargs = processor_kwargs or {}

    def __call__(self, question: Question) -> Prepared:
        kwargs: dict[str, Any] = dict(self.processor_kwargs)
        if self.use_chat_template:
            system = [{"role": "system", "content": [{"type": "text", "text": question.system}]}]
            lead = [{"type": "text", "text": question.lead}][: bool(question.lead)]
            parts = [*lead, {"type": "image"}, {"type": "text", "text": question.prompt}]
            user = {"role": "user", "content": parts}
            messages = [*system[: bool(question.system)], user]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            # as ``processor.apply_chat_template(tokenize=True)`` does: a template that writes the BOS
            # token itself (Gemma 3, Llama 3) must not get a second one from the tokenizer
            bos = getattr(getattr(self.processor, "tokenizer", None), "bos_token", None)
            if bos and text.startswith(bos):
                kwargs["add_special_tokens"] = False
        else:
            # the image placeholder first, the rest is the processor's job
            text = f"{question.lead or ''}{getattr(self.processor, 'image_token', '')}{question.prompt}"
        # images nested per sample (one list per text), the form every processor accepts
        image = question.image  # decoded here, in the worker
        features = dict(self.processor(images=[[image]], text=[text], return_tensors="pt", **kwargs))
        for key in [
            key for key, value in features.items() if key in TRAINING_KEYS or not hasattr(value, "shape")
        ]:
            # training targets, and lists of per-image metadata some processors add (not model inputs)
            del features[key]
        length = int(features["input_ids"].shape[1])
        if self.max_positions and length >= self.max_positions:
            raise QuestionError(
                f"prompt is {length} tokens: it fills the model's {self.max_positions} positions and leaves "
                "no room for an answer (use a longer-context model)"
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

    if not could_be_hub_id(model_id):
        raise OSError(f"--model {model_id}: no such folder ({Path(model_id).expanduser().absolute()})")
    # a name like "models/tiny" is a folder path or a Hub id: say what was found for both
    local = f"or pass --model /path/to/a/folder holding it (e.g. from `hf download {model_id}`)"
    cached = isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if cached:
            return True
        raise OSError(
            f"--model {model_id}: no such folder here, and not in the local Hub cache with the Hub off "
            f"(HF_HUB_OFFLINE=1): check the path, {local}"
        )
    try:
        model_info(model_id, timeout=HUB_CHECK_TIMEOUT_S)
    except (RepositoryNotFoundError, HFValidationError):
        raise OSError(
            f"--model {model_id}: no such folder here, and no such model on the Hugging Face Hub (or it "
            "is private: log in with `hf auth login`): check the path or the name"
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
            f"--model {model_id}: no such folder here, and the Hugging Face Hub cannot be reached "
            f"({error}) to download it: check the path, connect, {local}"
        ) from None
    return False


def could_be_hub_id(name: str) -> bool:
    """Whether ``name`` is spelled like a Hub model id (``name`` or ``owner/name``), not only a path."""
    from huggingface_hub.utils import validate_repo_id

    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except ValueError:
        return False
    return True


class HFBackend(Backend):
    """A transformers vision-language model on one device (one copy per process)."""

    def __init__(
        self,
        model_id: str,
        device: Any,
        *,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        device_map: str | None = None,
        gpus_per_process: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        placement = self._placement(device, device_map, gpus_per_process)
        # inputs go where the model starts (its embeddings); accelerate's hooks move them on
        self.device = torch.device(
            device if placement["device_map"] != "auto" else self._first_device(placement)
        )
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
        # weights go straight to this process's device(s) (no full copy in host memory per process)
        kwargs = {
            "dtype": self.dtype,
            "trust_remote_code": trust_remote_code,
            "local_files_only": local,
            **placement,
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
        #: The fewest new tokens a batch was allowed when its prompts left less than --max-new-tokens.
        self.fitted_budget: int | None = None
        self.eos_token_id = self.model.generation_config.eos_token_id
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        self.stop_ids = [i for i in eos if i is not None] or [self.pad_token_id]
        forward = inspect.signature(self.model.forward).parameters
        self.keeps_logits = "logits_to_keep" in forward
        self._letter_ids: dict[str, list[int]] | None = None

    def _placement(self, device: Any, device_map: str | None, gpus_per_process: int | None) -> dict[str, Any]:
        """``from_pretrained``'s ``device_map`` (and ``max_memory``): one device, or this process's GPUs."""
        torch = self.torch
        if device_map is None and gpus_per_process is None:
            return {"device_map": str(device)}
        if device_map not in (None, *DEVICE_MAPS):
            raise ValueError(f"--device-map {device_map!r}: choose one of {', '.join(DEVICE_MAPS)}")
        gpus = process_gpus(
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
            torch.cuda.device_count() if torch.cuda.is_available() else 0,
            gpus_per_process,
        )
        if not gpus:
            return {"device_map": "auto"}  # no GPU: accelerate keeps it all on the CPU
        # only this process's GPUs, each with what is free on it (accelerate balances the layers)
        return {"device_map": "auto", "max_memory": {gpu: torch.cuda.mem_get_info(gpu)[0] for gpu in gpus}}

    @staticmethod
    def _first_device(placement: dict[str, Any]) -> str:
        memory = placement.get("max_memory")
        return f"cuda:{min(memory)}" if memory else "cpu"

    def _resolve_dtype(self, dtype: str) -> Any:
        torch = self.torch
        if dtype not in DTYPES:
            raise ValueError(f"unknown --dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        if dtype == "auto":
            on_gpu = self.device.type == "cuda"
            return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
        return getattr(torch, dtype)

    def preparer(self) -> HFPreparer:
        return HFPreparer(self.processor, self.max_positions, self.use_chat_template, self.processor_kwargs)

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
        max_new_tokens = self.fit_budget(int(batch["input_ids"].shape[1]), max_new_tokens)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=self.num_beams,
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

    def fit_budget(self, prompt_length: int, max_new_tokens: int) -> int:
        """``max_new_tokens``, or what the model's positions leave after the prompt when that is less.

        A small-context model (512 positions, like the tiny test models) would otherwise fail
        every question under the default 2048; the first fitted batch is logged once, and the
        smallest budget goes into results.json (``run.engine.fitted_max_new_tokens``).
        """
        if not self.max_positions or prompt_length + max_new_tokens <= self.max_positions:
            return max_new_tokens
        budget = self.max_positions - prompt_length
        if self.fitted_budget is None:
            logger.warning(
                "the model takes at most %d positions: each answer gets what its prompt leaves "
                "(%d new tokens here) instead of --max-new-tokens %d",
                self.max_positions,
                budget,
                max_new_tokens,
            )
        self.fitted_budget = min(budget, self.fitted_budget or budget)
        return budget

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
        if not isinstance(error, self.torch.cuda.OutOfMemoryError):
            return False
        self.torch.cuda.empty_cache()  # give the failed batch's blocks back before the smaller one
        return True

    def _devices(self) -> list[Any]:
        """Where the weights are: the device map's devices when spread, else the one device."""
        device_map = getattr(self.model, "hf_device_map", None) or {"": self.device}
        return [f"cuda:{d}" if isinstance(d, int) else d for d in device_map.values()]

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "transformers",
            "architecture": type(self.model).__name__,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": ",".join(sorted({str(d) for d in self._devices()})),
            "attention": getattr(self.model.config, "_attn_implementation", None),
            # where --batch-size auto (or an out-of-memory halving) ended up
            "batch_size": self.batch_limit,
            "max_positions": self.max_positions,
            "fitted_max_new_tokens": self.fitted_budget,
            "num_beams": self.num_beams,
        }
