"""VLMEvalKit's per-model-wrapper prompts for GMAI-MMBench (an MCQ dataset), read from its source.

Most VLMEvalKit wrappers replace the dataset's prompt with their own (``use_custom_prompt`` ->
``build_prompt``), so a number is only comparable with the leaderboard under the prompt of the
wrapper that produced it. Each wrapper is one row of :data:`WRAPPERS`; the texts are re-stated here
(behaviour ported, no code copied) from VLMEvalKit at :data:`VLMEVALKIT_COMMIT`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The VLMEvalKit commit the rules below were read from.
VLMEVALKIT_COMMIT = "e8e78f0"
PREFIX = "vlmevalkit"
DATASET = "vlmevalkit-dataset"

_CN = re.compile("[\u4e00-\u9fff]")
_LETTER_CN = "请直接回答选项字母。"
_LLAVA_EN = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class Rule:
    """How one wrapper builds the MCQ prompt.

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
    #: Generation settings the wrapper fixes for this dataset (our name -> value).
    generation: dict[str, Any] = field(default_factory=dict)
    #: Whether the text is stripped of surrounding whitespace (wrappers that format the chat themselves).
    strip: bool = False
    #: Settings we cannot reproduce; a run under this rule is not comparable while they stand.
    unreproduced: tuple[str, ...] = ()


_LLAVA = Rule("llava", _LLAVA_EN, _LETTER_CN, "Answer the question directly.", "请直接回答问题。")
_VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions. "
)

#: VLMEvalKit wrapper class name -> its rule for GMAI-MMBench.
WRAPPERS: dict[str, Rule] = {
    "Qwen2VLChat": Rule(
        "qwen",
        "Please select the correct answer from the options above.",
        _LETTER_CN,
        unreproduced=("min_pixels=1280*28*28 in VLMEvalKit's Qwen2.5-VL configurations",),
    ),
    "Qwen3VLChat": Rule("qwen", "Answer with the option letter only."),
    "LLaVA": Rule(**{**_LLAVA.__dict__, "system": _VICUNA_SYSTEM}),
    "LLaVA_Next": _LLAVA,
    "InternVLChat": _LLAVA,
    "LLaVA_OneVision_HF": Rule("dataset"),
    # no custom prompt for GMAI, but ``generate_inner`` writes ``User:<image>{text.strip()}...``
    "IDEFICS2": Rule("dataset", strip=True),
    # the dataset's prompt; ``generate_inner`` caps MCQ answers at 128 new tokens
    "llama_vision": Rule("dataset", generation={"max_new_tokens": 128}),
    "molmo": Rule("prefixed", "a_okvqa_mc:"),
    "SmolVLM": Rule("dataset", strip=True),
    "MiniCPM_V_2_6": Rule(
        "minicpm",
        "\n" + _LLAVA_EN,
        system="Carefully read the following question Answer the question directly.",
        generation={"num_beams": 3},
    ),
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
    name = wrapper_of(prompt)
    if name is None:
        return prompt
    rule_for(prompt)
    return f"{PREFIX}:{name}@{VLMEVALKIT_COMMIT}"


def build(row: Mapping[str, Any], prompt: str) -> tuple[str | None, str]:
    """(system prompt or None, user text) the wrapper builds for one GMAI-MMBench row."""
    rule = rule_for(prompt)
    question, options = str(row["question"]), _options(row)
    if rule.layout == "dataset":
        text = _dataset_text(question, options)
        return None, text.strip() if rule.strip else text
    if rule.layout == "llava":
        text = question + "".join(f"\n{k}. {v}" for k, v in options.items())
        en, cn = (rule.instruction, rule.instruction_cn) if options else (rule.no_options, rule.no_options_cn)
        return rule.system, text + "\n" + (cn if cn and _CN.search(text) else en)
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
        beams = rule.generation.get("num_beams")
        if beams and run.get("backend") != "transformers":
            problems.append(f"not reproduced: {name}'s num_beams={beams} (only the transformers backend)")
        tokens = rule.generation.get("max_new_tokens")
        if tokens and run.get("max_new_tokens") != tokens:
            problems.append(f"not reproduced: {name}'s max_new_tokens={tokens} (--max-new-tokens {tokens})")
    return problems


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
