"""Tiny random-weight vision-language models, built offline, for tests and benchmarks.

Nothing can be downloaded here, so each model is built from a config with random weights and a
byte-level BPE tokenizer trained locally with ``tokenizers``; processor and model are saved to a
folder that ``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained`` load like a Hub
checkpoint. Their answers are noise; they exercise the real code paths (chat template, image
tokens, left padding, generation, letter scoring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gmai_hf import prompts, schema

#: LLaVA-1.5's conversation format (``USER: <image>\n... ASSISTANT:``).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

#: Gemma 3's (and MedGemma's) turn format.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

#: SmolVLM's (Idefics3) turn format: ``<|im_start|>User:<image>...<end_of_utterance>\nAssistant:``.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

#: Side of the (square) input image; with 14-pixel patches that is 2 x 2 image tokens.
IMAGE_SIZE = 28
PATCH_SIZE = 14


def _corpus() -> Iterable[str]:
    """Text the tokenizer learns merges from: the prompts and the benchmark's label strings."""
    from gmai_hf.testing.data import iter_rows

    for row in iter_rows(200, seed=1, image_size=4, distinct_images=1, reference_every=0):
        for style in prompts.PROMPT_STYLES:
            yield prompts.build_prompt(row, style)
    yield from schema.CLINICAL_VQA_TASKS
    yield from schema.DEPARTMENTS
    yield from schema.MODALITIES
    yield " ".join(f"{letter}. ({letter}) {letter}" for letter in schema.OPTION_LETTERS)


def train_tokenizer(
    special_tokens: list[str], named_tokens: dict[str, str], vocab_size: int = 600, **kwargs: Any
) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on :func:`_corpus`.

    ``special_tokens`` come first in the vocabulary; ``named_tokens`` maps tokenizer attributes
    (``bos_token``, ``pad_token``, ..., or model-specific ones such as ``boi_token``) to them.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    standard = {"bos_token", "eos_token", "unk_token", "pad_token"}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        **{k: v for k, v in named_tokens.items() if k in standard},
        extra_special_tokens={k: v for k, v in named_tokens.items() if k not in standard},
        **kwargs,
    )


def _tiny_text(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        **overrides,
    }


def _tiny_vision(**overrides: Any) -> dict[str, Any]:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        **overrides,
    }


def build_tiny_llava(path: str | Path, seed: int = 0) -> Path:
    """A tiny LLaVA (CLIP vision tower + Llama) with its processor, saved to ``path``."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = train_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    special = tokenizer.convert_tokens_to_ids
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_tiny_vision()),
        text_config=LlamaConfig(
            **_tiny_text(
                len(tokenizer),
                bos_token_id=special("<s>"),
                eos_token_id=special("</s>"),
                pad_token_id=special("<pad>"),
            )
        ),
        image_token_index=special("<image>"),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_layer=-1,
    )
    return _save(path, processor, lambda: LlavaForConditionalGeneration(config), seed, torch)


def build_tiny_gemma3(path: str | Path, seed: int = 0) -> Path:
    """A tiny Gemma 3 (SigLIP vision tower + Gemma 3 text model; MedGemma's architecture)."""
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tokens = {
        "pad_token": "<pad>",
        "eos_token": "<eos>",
        "bos_token": "<bos>",
        "unk_token": "<unk>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    # like Gemma 3's own tokenizer, it adds BOS and the template writes it too: the backend must
    # not double it
    tokenizer = train_tokenizer(
        [*tokens.values(), "<start_of_turn>", "<end_of_turn>"], tokens, add_bos_token=True
    )
    tokens_per_image = (IMAGE_SIZE // PATCH_SIZE) ** 2
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        image_seq_length=tokens_per_image,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    special = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        text_config=Gemma3TextConfig(
            **_tiny_text(
                len(tokenizer),
                head_dim=16,
                sliding_window=64,
                bos_token_id=special("<bos>"),
                eos_token_id=[special("<eos>"), special("<end_of_turn>")],
                pad_token_id=special("<pad>"),
            )
        ),
        vision_config=SiglipVisionConfig(**_tiny_vision()),
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=special("<start_of_image>"),
        eoi_token_index=special("<end_of_image>"),
        image_token_index=special("<image_soft_token>"),
    )
    return _save(path, processor, lambda: Gemma3ForConditionalGeneration(config), seed, torch)


def build_tiny_idefics3(path: str | Path, seed: int = 0) -> Path:
    """A tiny Idefics3 (SmolVLM's architecture: SigLIP-like vision tower + Llama, pixel shuffle).

    Images are split into tiles (up to 2 x 2 of 28 px, plus the whole image), so the number of
    tiles and image tokens depends on the image's size, as in SmolVLM.
    """
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    grid = [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
    tokens = {
        "unk_token": "<unk>",
        "bos_token": "<|im_start|>",
        "eos_token": "<end_of_utterance>",
        "pad_token": "<pad>",
    }
    tokenizer = train_tokenizer(
        [*tokens.values(), "<image>", "<fake_token_around_image>", "<global-img>", *grid], tokens
    )
    tile = IMAGE_SIZE
    scale_factor = 2  # pixel shuffle: (tile // patch) ** 2 / scale_factor ** 2 tokens per tile
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile}, do_image_splitting=True
        ),
        tokenizer=tokenizer,
        image_seq_len=(tile // PATCH_SIZE) ** 2 // scale_factor**2,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    special = tokenizer.convert_tokens_to_ids
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**_tiny_vision(image_size=tile)).to_dict(),
        text_config=LlamaConfig(
            **_tiny_text(
                len(tokenizer),
                bos_token_id=special("<|im_start|>"),
                eos_token_id=special("<end_of_utterance>"),
                pad_token_id=special("<pad>"),
            )
        ).to_dict(),
        scale_factor=scale_factor,
        image_token_id=special("<image>"),
        pad_token_id=special("<pad>"),
    )
    return _save(path, processor, lambda: Idefics3ForConditionalGeneration(config), seed, torch)


def _save(path: str | Path, processor: Any, make_model: Callable[[], Any], seed: int, torch: Any) -> Path:
    path = Path(path)
    torch.manual_seed(seed)
    model = make_model()
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


#: Architecture name -> builder, for tests and ``benchmarks/bench_runner.py``.
TINY_MODELS: dict[str, Callable[..., Path]] = {
    "llava": build_tiny_llava,
    "gemma3": build_tiny_gemma3,
    "idefics3": build_tiny_idefics3,
}
