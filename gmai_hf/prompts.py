"""The two multiple-choice prompts VLMEvalKit uses for GMAI-MMBench, character for character.

Leaderboard numbers depend on the exact wording, so these reproduce VLMEvalKit: its generic
image-MCQ prompt (``ImageMCQDataset.build_prompt``) and the LLaVA/InternVL-style wrappers' prompt.
GMAI has no hint column, so no ``Hint:`` line is ever written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gmai_hf import schema

#: Prompt styles accepted by ``--prompt``.
PROMPT_STYLES: tuple[str, ...] = ("vlmevalkit", "llava")

LLAVA_INSTRUCTION = "Answer with the option's letter from the given choices directly."
VLMEVALKIT_INSTRUCTION = "Please select the correct answer from the options above. "


def present_options(row: Mapping[str, Any]) -> dict[str, str]:
    """The question's present options, letter -> text, in letter order (empty options dropped)."""
    return {
        letter: str(row[letter])
        for letter in schema.OPTION_LETTERS
        if row.get(letter) is not None and str(row[letter]) != ""
    }


def build_prompt(row: Mapping[str, Any], style: str = "vlmevalkit") -> str:
    """The text part of the prompt for one question (a row with ``question`` and ``A``..``E``)."""
    options = present_options(row)
    question = str(row["question"])
    if style == "vlmevalkit":
        text = f"Question: {question}\n"
        if options:
            text += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in options.items())
            text += VLMEVALKIT_INSTRUCTION + "\n"
        return text
    if style == "llava":
        text = question + "".join(f"\n{k}. {v}" for k, v in options.items())
        return text + "\n" + (LLAVA_INSTRUCTION if options else "Answer the question directly.")
    raise ValueError(f"unknown prompt style {style!r}: choose one of {', '.join(PROMPT_STYLES)}")
