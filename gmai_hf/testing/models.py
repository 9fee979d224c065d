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

#: Qwen2.5-VL's turn format (its default system message, then ``<|vision_start|><|image_pad|><|vision_end|>``
#: for each image; the processor repeats ``<|image_pad|>`` once per merged 28 x 28 patch).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Qwen3-VL's (Instruct) turn format: as Qwen2.5-VL's, without a default system message.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: InternVL's (the ``-hf`` checkpoints') turn format; the processor expands each ``<IMG_CONTEXT>``
#: to ``<img>`` + ``<IMG_CONTEXT>`` per token of every tile + ``</img>``.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: LLaVA-OneVision's turn format (``<|im_start|>user <image>\n...<|im_end|><|im_start|>assistant\n``):
#: images first, then each text on a new line.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }} "
    "{% for item in message['content'] if item['type'] == 'image' %}<image>{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ '\\n' + item['text'] }}{% endfor %}"
    "<|im_end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
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


#: Positions of every tiny language model: room for the longest thing a test sends (the LLM judge's
#: prompts, ~1,800 tokens) plus the default 2048 new tokens, so no test depends on how a release
#: of transformers or ``transformers serve`` treats an over-long prompt.
TINY_CONTEXT = 4096


def _tiny_text(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": TINY_CONTEXT,
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


#: Qwen's end-of-turn and padding tokens, named as in its tokenizer (which has no BOS or UNK token).
QWEN_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


def _qwen_tokenizer(extra: list[str], named: dict[str, str]) -> Any:
    """Qwen's tokenizer: no BOS token, ``<|im_end|>`` ends a turn, ``<|endoftext|>`` pads."""
    return train_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *extra], {**QWEN_TOKENS, **named}, vocab_size=800
    )


#: The tokens Qwen2.5-VL's and Qwen3-VL's processors and templates use for images (and videos).
QWEN_VL_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}


def _qwen_vl_tokenizer() -> Any:
    """Qwen's tokenizer with the vision tokens of Qwen2.5-VL and Qwen3-VL."""
    return _qwen_tokenizer(
        ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", *QWEN_VL_TOKENS.values()], QWEN_VL_TOKENS
    )


def _qwen_vl_sizes(patch: int, merge: int) -> dict[str, int]:
    """Qwen-VL image processor sizes: one token per ``merge`` x ``merge`` patches, 4 to 16 tokens."""
    side = patch * merge  # of the square of pixels each token covers
    return {
        "min_pixels": (2 * side) ** 2,
        "max_pixels": (4 * side) ** 2,
        "patch_size": patch,
        "merge_size": merge,
    }


def build_tiny_qwen2_5_vl(path: str | Path, seed: int = 0) -> Path:
    """A tiny Qwen2.5-VL (windowed-attention ViT + Qwen2 text model with multimodal RoPE).

    Images keep their aspect ratio and are resized to a multiple of 28 px between 56 x 56 and 112 x 112
    pixels' worth; each 28 x 28 block (2 x 2 patches of 14 px, merged) is one image token, so the number
    of tokens (4 to 16) and the rows of ``pixel_values`` depend on the image's size, as in Qwen2.5-VL.
    Needs ``torchvision`` (for the video processor the processor requires).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    merge = 2  # 2 x 2 patches make one token
    return _build_qwen2_vl_like(
        path,
        seed,
        (Qwen2_5_VLProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
        lambda width: {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": merge,
            "window_size": 4 * PATCH_SIZE * merge,  # attention within 4 x 4 token windows
            "fullatt_block_indexes": [1],
            "out_hidden_size": width,
        },
    )


def build_tiny_qwen2_vl(path: str | Path, seed: int = 0) -> Path:
    """A tiny Qwen2-VL (full-attention ViT + Qwen2 text model with multimodal RoPE): as
    :func:`build_tiny_qwen2_5_vl`, with Qwen2-VL's vision tower. Needs ``torchvision``."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    return _build_qwen2_vl_like(
        path,
        seed,
        (Qwen2VLProcessor, Qwen2VLConfig, Qwen2VLForConditionalGeneration),
        lambda width: {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": width,  # the merger's output: the text model's width
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": 2,
        },
    )


def _build_qwen2_vl_like(
    path: str | Path, seed: int, classes: tuple[Any, Any, Any], vision: Callable[[int], dict[str, Any]]
) -> Path:
    """Qwen2-VL and Qwen2.5-VL: the same processor, text model and tokens; ``vision`` is the vision
    tower's config for a text model of the given width; ``classes`` (processor, config, model)."""
    import torch
    from transformers import Qwen2VLImageProcessorPil, Qwen2VLVideoProcessor

    processor_class, config_class, model_class = classes
    tokenizer = _qwen_vl_tokenizer()
    sizes = _qwen_vl_sizes(PATCH_SIZE, 2)  # 2 x 2 patches make one token
    processor = processor_class(
        image_processor=Qwen2VLImageProcessorPil(**sizes),
        tokenizer=tokenizer,
        # required (and needs torchvision), though videos are never given
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,  # Qwen2-VL's is the same
    )
    text = _qwen_text(
        tokenizer,
        # the rotary half of each 16-wide head split over (time, height, width)
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
    )
    config = config_class(
        text_config=text, vision_config=vision(text["hidden_size"]), **_qwen_vl_token_ids(tokenizer)
    )
    return _save(path, processor, lambda: model_class(config), seed, torch)


def build_tiny_qwen3_vl(path: str | Path, seed: int = 0) -> Path:
    """A tiny Qwen3-VL (ViT with DeepStack features + Qwen3 text model with interleaved multimodal RoPE).

    As :func:`build_tiny_qwen2_5_vl`, with Qwen3-VL's 16 px patches: images are resized to a multiple
    of 32 px between 64 x 64 and 128 x 128 pixels' worth, one token per 32 x 32 block (4 to 16).
    Needs ``torchvision``.
    """
    import torch
    from transformers import (
        Qwen2VLImageProcessorPil,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = _qwen_vl_tokenizer()
    patch, merge = 16, 2
    sizes = _qwen_vl_sizes(patch, merge)
    half = [0.5, 0.5, 0.5]
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(**sizes, image_mean=half, image_std=half),
        tokenizer=tokenizer,
        # required (and needs torchvision), though videos are never given
        video_processor=Qwen3VLVideoProcessor(**sizes, image_mean=half, image_std=half),
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    text = _qwen_text(
        tokenizer,
        head_dim=16,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [2, 3, 3],
            "mrope_interleaved": True,
        },
    )
    config = Qwen3VLConfig(
        text_config=text,
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": patch,
            "spatial_merge_size": merge,
            "num_position_embeddings": 64,  # an 8 x 8 grid, interpolated to the image's
            "deepstack_visual_indexes": [0],
            "out_hidden_size": text["hidden_size"],
        },
        **_qwen_vl_token_ids(tokenizer),
    )
    return _save(path, processor, lambda: Qwen3VLForConditionalGeneration(config), seed, torch)


def build_tiny_internvl(path: str | Path, seed: int = 0) -> Path:
    """A tiny InternVL (InternViT + Qwen2, pixel shuffle; the transformers-native ``-hf`` format).

    Images are cut into 56 px tiles on the grid (up to 4 tiles) whose aspect ratio is closest to
    the image's, plus a thumbnail of the whole image when there is more than one tile; each tile is 4
    image tokens (16 patches of 14 px, pixel-shuffled by 2), so the tiles (``pixel_values``' first
    dimension) and image tokens depend on the image's size, as in InternVL. Needs ``torchvision``.
    """
    import torch
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
    )

    named = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tokenizer = _qwen_tokenizer(list(named.values()), named)
    tile = 2 * IMAGE_SIZE
    downsample_ratio = 0.5  # pixel shuffle: (tile // patch) ** 2 * ratio ** 2 tokens per tile
    tokens_per_tile = int((tile // PATCH_SIZE) ** 2 * downsample_ratio**2)
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessorPil(
            size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=1, max_patches=4
        ),
        tokenizer=tokenizer,
        # required (and needs torchvision), though videos are never given
        video_processor=InternVLVideoProcessor(size={"height": tile, "width": tile}),
        image_seq_length=tokens_per_tile,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    special = tokenizer.convert_tokens_to_ids
    config = InternVLConfig(
        vision_config=InternVLVisionConfig(**_tiny_vision(image_size=tile)),
        text_config=_qwen2_text(tokenizer),
        image_token_id=special("<IMG_CONTEXT>"),
        image_seq_length=tokens_per_tile,
        downsample_ratio=downsample_ratio,
        # InternVL3-1B ties them, but tied random embeddings only ever repeat the last prompt token
        tie_word_embeddings=False,
    )
    return _save(path, processor, lambda: InternVLForConditionalGeneration(config), seed, torch)


def build_tiny_llava_onevision(path: str | Path, seed: int = 0) -> Path:
    """A tiny LLaVA-OneVision (SigLIP vision tower + Qwen2, "anyres" tiling).

    A single image becomes its 28 px thumbnail plus the 28 px tiles of the grid (up to 3 x 3) that
    best fits its size; the tiles' features are unpadded to the image's aspect ratio with a newline
    token per row, so the number of tiles and image tokens depend on the image's size. Needs
    ``torchvision``.
    """
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    named = {"image_token": "<image>", "video_token": "<video>"}
    tokenizer = _qwen_tokenizer(list(named.values()), named)
    pinpoints = [[IMAGE_SIZE * rows, IMAGE_SIZE * cols] for rows in range(1, 4) for cols in range(1, 4)]
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(size=square, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        # required (and needs torchvision), though videos are never given
        video_processor=LlavaOnevisionVideoProcessor(size=square),
        num_image_tokens=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    special = tokenizer.convert_tokens_to_ids
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**_tiny_vision(vision_use_head=False)),
        text_config=_qwen2_text(tokenizer),
        image_token_index=special("<image>"),
        video_token_index=special("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    return _save(path, processor, lambda: LlavaOnevisionForConditionalGeneration(config), seed, torch)


def _qwen_text(tokenizer: Any, **overrides: Any) -> dict[str, Any]:
    """A tiny Qwen-family language model's settings for a tokenizer of :func:`_qwen_tokenizer`."""
    special = tokenizer.convert_tokens_to_ids
    return _tiny_text(
        len(tokenizer),
        bos_token_id=special("<|endoftext|>"),
        eos_token_id=[special("<|im_end|>"), special("<|endoftext|>")],
        pad_token_id=special("<|endoftext|>"),
        **overrides,
    )


def _qwen2_text(tokenizer: Any) -> Any:
    """A tiny Qwen2 language model config (InternVL's and LLaVA-OneVision's)."""
    from transformers import Qwen2Config

    return Qwen2Config(**_qwen_text(tokenizer))


def _qwen_vl_token_ids(tokenizer: Any) -> dict[str, int]:
    """The image and video token ids of a Qwen-VL configuration."""
    special = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": special("<|image_pad|>"),
        "video_token_id": special("<|video_pad|>"),
        "vision_start_token_id": special("<|vision_start|>"),
        "vision_end_token_id": special("<|vision_end|>"),
    }


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
    "qwen2_vl": build_tiny_qwen2_vl,
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
    "qwen3_vl": build_tiny_qwen3_vl,
    "internvl": build_tiny_internvl,
    "llava_onevision": build_tiny_llava_onevision,
}
