"""VLMEvalKit's per-model-wrapper prompts for GMAI-MMBench (an MCQ dataset), read from its source.

Most VLMEvalKit wrappers replace the dataset's prompt with their own (``use_custom_prompt`` ->
``build_prompt``), so a number is only comparable with the leaderboard under the prompt of the
wrapper that produced it. Each wrapper is one row of :data:`WRAPPERS`: its text and system prompt,
and what it fixes around them (generation length, beams, the image it shows, the answer it keeps),
re-stated here (behaviour ported, no code copied) from VLMEvalKit at :data:`VLMEVALKIT_COMMIT`.
``.ci/check_vlmevalkit_prompts.py`` compares the texts with VLMEvalKit's own code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: The VLMEvalKit commit the rules below were read from.
VLMEVALKIT_COMMIT = "e8e78f0"
PREFIX = "vlmevalkit"
DATASET = "vlmevalkit-dataset"

_CN = re.compile("[\u4e00-\u9fff]")
_LETTER_CN = "请直接回答选项字母。"
_LLAVA_EN = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class QwenResize:
    """``qwen_vl_utils``' resize before the processor: onto a ``factor`` grid, the pixel count
    within ``[min_pixels, max_pixels]`` (VLMEvalKit's Qwen2-VL/Qwen2.5-VL configurations set both)."""

    min_pixels: int
    max_pixels: int
    factor: int = 28


@dataclass(frozen=True)
class JpegAgain:
    """An API wrapper's ``encode_image_to_base64``: RGB, fitted within ``max_side`` (``-1``: as
    is), enlarged when its short side is under ``min_edge``, saved as JPEG once more."""

    max_side: int = -1
    min_edge: int = 100


@dataclass(frozen=True)
class Rule:
    """How one wrapper builds the MCQ prompt and what it fixes around it.

    ``layout`` is ``dataset`` (VLMEvalKit's generic ``Question:``/``Options:`` text), ``qwen``
    (the same lines, one instruction, stripped), ``llava`` (question, then ``A. ..`` lines, then an
    instruction), ``prefixed`` (the instruction, a space, the question, then ``A: ..`` lines) or
    ``minicpm`` (``Question:``/``Options:`` then a suffix after a blank line).
    """

    layout: str
    instruction: str = ""
    instruction_cn: str | None = None
    no_options: str = ""
    no_options_cn: str | None = None
    system: str | None = None
    #: The wrapper's generation length for an MCQ dataset (the default of ``--max-new-tokens``).
    max_new_tokens: int = 2048
    #: The system text goes in the user turn, before the image (MiniCPM: ``build_prompt`` puts it
    #: there as a text item; the model sees no system role).
    system_before_image: bool = False
    #: Beam search (MiniCPM); only the transformers backend can reproduce it.
    num_beams: int = 1
    #: What the wrapper does to the image before the model sees it.
    image: QwenResize | JpegAgain | None = None
    #: Image-processor settings for the checkpoint's own processor (transformers backend only).
    processor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: The ``detail`` an OpenAI-style wrapper puts in every ``image_url``.
    image_detail: str | None = None
    #: Characters the wrapper strips from the end of every answer (DeepSeek-VL2: ``.``).
    answer_rstrip: str = ""
    #: Whether the text is stripped of surrounding whitespace (wrappers that format the chat themselves).
    strip: bool = False
    #: Settings we cannot reproduce; a run under this rule is not comparable while they stand.
    unreproduced: tuple[str, ...] = ()


_LLAVA = Rule("llava", _LLAVA_EN, _LETTER_CN, "Answer the question directly.", "请直接回答问题。")
_VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions. "
)
_NATIVE_CHAT = "VLMEvalKit writes {}'s chat format by hand; we use the checkpoint's chat template"

#: VLMEvalKit wrapper class name -> its rule for GMAI-MMBench.
WRAPPERS: dict[str, Rule] = {
    "Qwen2VLChat": Rule(
        "qwen",
        "Please select the correct answer from the options above.",
        _LETTER_CN,
        image=QwenResize(1280 * 28 * 28, 16384 * 28 * 28),
    ),
    "Qwen3VLChat": Rule("qwen", "Answer with the option letter only.", max_new_tokens=32768),
    "LLaVA": replace(_LLAVA, system=_VICUNA_SYSTEM),
    "LLaVA_Next": _LLAVA,
    # ``set_max_num``: at most 6 tiles of 448 px (and the thumbnail) for a dataset like GMAI
    "InternVLChat": replace(
        _LLAVA, max_new_tokens=4096, processor_kwargs={"crop_to_patches": True, "max_patches": 6}
    ),
    "LLaVA_OneVision_HF": Rule("dataset"),
    # no custom prompt for GMAI, but ``generate_inner`` writes ``User:<image>{text.strip()}...``
    "IDEFICS2": Rule("dataset", strip=True, max_new_tokens=1024),
    # the dataset's prompt; ``generate_inner`` caps MCQ answers at 128 new tokens
    "llama_vision": Rule("dataset", max_new_tokens=128),
    "molmo": Rule("prefixed", "a_okvqa_mc:", max_new_tokens=200),
    "SmolVLM": Rule("dataset", strip=True),
    "MiniCPM_V_2_6": Rule(
        "minicpm",
        "\n" + _LLAVA_EN,
        system="Carefully read the following question Answer the question directly.",
        system_before_image=True,
        num_beams=3,
    ),
    # the transformers path's default system prompt (its vLLM path sends none)
    "Gemma3": Rule("dataset", system="You are a helpful assistant. ", max_new_tokens=4096),
    "Phi3Vision": Rule("dataset", unreproduced=(_NATIVE_CHAT.format("Phi3Vision"),)),
    "Phi4Multimodal": Rule(
        "dataset",
        max_new_tokens=1000,
        unreproduced=(_NATIVE_CHAT.format("Phi4Multimodal"),),
    ),
    # LLaVA's layout without a Chinese branch or a no-option instruction; ``max_partition=9``
    "Ovis2": Rule("llava", _LLAVA_EN, max_new_tokens=1024),
    "DeepSeekVL2": Rule("dataset", answer_rstrip="."),
    # API wrappers take the dataset's prompt; images are JPEG-encoded once more before sending
    "GPT4V": Rule("dataset", image=JpegAgain(), image_detail="low"),
    "Gemini": Rule(
        "dataset",
        unreproduced=("Gemini's image: the google-genai SDK encodes the PIL image itself",),
    ),
    "Claude3V": Rule("dataset", image=JpegAgain(max_side=4096)),
}

#: ``config.json`` ``model_type`` -> the wrapper VLMEvalKit evaluates that family with.
MODEL_TYPES: dict[str, str] = {
    "qwen2_vl": "Qwen2VLChat",
    "qwen2_5_vl": "Qwen2VLChat",
    "qwen3_vl": "Qwen3VLChat",
    "qwen3_vl_moe": "Qwen3VLChat",
    "internvl": "InternVLChat",
    "internvl_chat": "InternVLChat",
    "llava": "LLaVA",
    "llava_next": "LLaVA_Next",
    "llava_onevision": "LLaVA_OneVision_HF",
    "minicpmv": "MiniCPM_V_2_6",
    "idefics2": "IDEFICS2",
    "idefics3": "SmolVLM",
    "mllama": "llama_vision",
    "molmo": "molmo",
    "gemma3": "Gemma3",
    "phi3_v": "Phi3Vision",
    "phi4mm": "Phi4Multimodal",
    "phi4_multimodal": "Phi4Multimodal",
    "ovis": "Ovis2",
    "deepseek_vl_v2": "DeepSeekVL2",
}


def _options(row: Mapping[str, Any]) -> dict[str, str]:
    from gmai_hf.prompts import present_options

    return present_options(row)


def _dataset_text(question: str, options: Mapping[str, str]) -> str:
    """VLMEvalKit's generic image-MCQ prompt (``ImageMCQDataset.build_prompt``); GMAI has no hint."""
    text = f"Question: {question}\n"
    if options:
        text += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in options.items())
        text += "Please select the correct answer from the options above. \n"
    return text


def wrapper_of(prompt: str) -> str | None:
    """The wrapper named by a prompt id (``vlmevalkit:Qwen2VLChat@e8e78f0`` -> ``Qwen2VLChat``)."""
    if not prompt.startswith(PREFIX + ":"):
        return None
    return prompt[len(PREFIX) + 1 :].split("@", 1)[0]


def rule_for(prompt: str) -> Rule:
    """The rule a prompt id stands for (the dataset's prompt for ``vlmevalkit``/``vlmevalkit-dataset``)."""
    name = wrapper_of(prompt)
    if name is None:
        if prompt in (PREFIX, DATASET):
            return WRAPPERS["LLaVA_OneVision_HF"]
        if prompt == "llava":
            return WRAPPERS["InternVLChat"]
        from gmai_hf.prompts import PROMPT_STYLES

        raise ValueError(f"unknown prompt {prompt!r}: use {', '.join(PROMPT_STYLES)} or {PREFIX}:<Wrapper>")
    if name not in WRAPPERS:
        raise ValueError(f"--prompt {prompt!r}: unknown VLMEvalKit wrapper; known: {', '.join(WRAPPERS)}")
    return WRAPPERS[name]


def resolve(prompt: str, model_type: str | None) -> str:
    """The prompt id a run records: the wrapper (auto-picked for ``vlmevalkit`` from ``model_type``)
    and the commit its rules were read from; the dataset's prompt when the family is unknown."""
    if prompt == PREFIX:
        name = MODEL_TYPES.get(model_type or "")
        return f"{PREFIX}:{name}@{VLMEVALKIT_COMMIT}" if name else DATASET
    if prompt == "llava":  # the older name of InternVLChat's text
        prompt = f"{PREFIX}:InternVLChat"
    name = wrapper_of(prompt)
    if name is None:
        return prompt
    rule_for(prompt)
    return f"{PREFIX}:{name}@{VLMEVALKIT_COMMIT}"


def family_of(prompt: str, model_type: str | None) -> bool:
    """Whether ``prompt`` is the wrapper VLMEvalKit evaluates ``model_type``'s family with."""
    name = wrapper_of(prompt)
    return name is not None and MODEL_TYPES.get(model_type or "") == name


def build(row: Mapping[str, Any], prompt: str) -> tuple[str | None, str]:
    """(system prompt or None, user text) the wrapper builds for one GMAI-MMBench row."""
    rule = rule_for(prompt)
    question, options = str(row["question"]), _options(row)
    if rule.layout == "dataset":
        text = _dataset_text(question, options)
        return rule.system, text.strip() if rule.strip else text
    if rule.layout == "llava":
        text = question + "".join(f"\n{k}. {v}" for k, v in options.items())
        en, cn = (rule.instruction, rule.instruction_cn) if options else (rule.no_options, rule.no_options_cn)
        instruction = cn if cn and _CN.search(text) else en
        return rule.system, f"{text}\n{instruction}" if instruction else text
    if rule.layout == "prefixed":
        lines = "".join(f"\n{k}: {v}" for k, v in options.items())
        return rule.system, f"{rule.instruction} {question}{lines}"
    text = f"Question: {question}\n"
    if options:
        text += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in options.items())
    if rule.layout == "qwen":
        if options:
            cn = rule.instruction_cn
            text += cn if cn and _CN.search(text) else rule.instruction
        return rule.system, text.rstrip()
    # minicpm: the suffix with options; without options the system prompt instead
    if options:
        return None, text + rule.instruction
    return rule.system, text


def comparability_problems(run: Mapping[str, Any]) -> list[str]:
    """Why a run's prompt keeps it from being compared with VLMEvalKit's number for its family."""
    prompt = str(run.get("prompt") or "")
    problems: list[str] = []
    if prompt in (DATASET, PREFIX) and run.get("backend") == "openai":
        problems.append("per-family prompt not applied (openai backend: the dataset's prompt was used)")
    name = wrapper_of(prompt)
    family = MODEL_TYPES.get(str(run.get("model_type") or ""))
    if family and name != family:
        problems.append(f"prompt {prompt!r} is not {family}'s, the wrapper VLMEvalKit uses for this family")
    if name in WRAPPERS:
        rule = WRAPPERS[name]
        problems += [f"not reproduced: {item}" for item in rule.unreproduced]
        if rule.processor_kwargs and run.get("backend") != "transformers":
            settings = ", ".join(f"{k}={v}" for k, v in rule.processor_kwargs.items())
            problems.append(
                f"not reproduced: {name}'s image tiling {settings} (only the transformers backend)"
            )
        if rule.num_beams > 1 and run.get("backend") != "transformers":
            beams = rule.num_beams
            problems.append(f"not reproduced: {name}'s num_beams={beams} (only the transformers backend)")
        tokens = run.get("max_new_tokens")
        if tokens is not None and tokens != rule.max_new_tokens:
            problems.append(
                f"not reproduced: {name}'s max_new_tokens={rule.max_new_tokens} (this run: {tokens})"
            )
    return problems


def prepare_image(prompt: str, data: bytes) -> bytes:
    """The image file the wrapper of ``prompt`` shows its model (``data`` when it changes nothing):
    Qwen's resize onto its patch grid (saved as PNG, adding no loss), an API wrapper's JPEG."""
    rule = rule_for(prompt) if wrapper_of(prompt) else None
    if rule is None or rule.image is None:
        return data
    import io

    from PIL import Image

    step = rule.image
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        image = opened
        if isinstance(step, QwenResize):
            image = image.convert("RGB")
            height, width = qwen_size(image.height, image.width, step)
            image, fmt = image.resize((width, height)), "PNG"
        else:
            if image.mode in ("RGBA", "P", "LA"):
                image = image.convert("RGB")
            if step.max_side > 0:
                image.thumbnail((step.max_side, step.max_side))
            if min(image.size) < step.min_edge:
                factor = step.min_edge / min(image.size)
                image = image.resize((int(image.width * factor), int(image.height * factor)))
            fmt = "JPEG"
        buffer = io.BytesIO()
        # a PNG's compression level changes no pixel; the lowest is the fastest on this per-image path
        image.save(buffer, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    return buffer.getvalue()


def qwen_size(height: int, width: int, step: QwenResize) -> tuple[int, int]:
    """``qwen_vl_utils.smart_resize``: (height, width) on the ``factor`` grid, the pixel count
    brought within ``[min_pixels, max_pixels]``, the aspect ratio kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"an image of {width}x{height} px is more than 200 times as long as it is wide")
    factor = step.factor
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > step.max_pixels:
        beta = math.sqrt(height * width / step.max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < step.min_pixels:
        beta = math.sqrt(step.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def model_type_of(model: str) -> str | None:
    """``model_type`` from a checkpoint's ``config.json`` (a folder, or the Hub: the small config
    file is fetched before the weights, so a first run picks the same wrapper as later ones); None
    when there is none to read, so ``--prompt vlmevalkit`` falls back to the dataset's prompt."""
    import json
    from pathlib import Path

    path: str | Path | None = Path(model) / "config.json"
    if not Path(path).is_file():
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(model, "config.json", etag_timeout=5)
        except Exception:  # no such model, offline and not cached, no connection: loading says why
            return None
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text(encoding="utf-8")).get("model_type")
