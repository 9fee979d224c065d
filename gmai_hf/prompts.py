"""The multiple-choice prompts VLMEvalKit shows models for GMAI-MMBench, character for character.

Leaderboard numbers depend on the exact wording, and VLMEvalKit's model wrappers mostly replace the
dataset's prompt with their own: the per-wrapper rules live in :mod:`gmai_hf.vlmevalkit_prompts`.
GMAI has no hint column, so no ``Hint:`` line is ever written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gmai_hf import schema

#: Prompt styles accepted by ``--prompt`` (besides ``vlmevalkit:<Wrapper>``, see
#: :mod:`gmai_hf.vlmevalkit_prompts`): the family's wrapper, the dataset's own prompt, LLaVA's.
PROMPT_STYLES: tuple[str, ...] = ("vlmevalkit", "vlmevalkit-dataset", "llava")


def present_options(row: Mapping[str, Any]) -> dict[str, str]:
    """The question's present options, letter -> text, in letter order (empty options dropped)."""
    return {
        letter: str(row[letter])
        for letter in schema.OPTION_LETTERS
        if row.get(letter) is not None and str(row[letter]) != ""
    }


def build_messages(row: Mapping[str, Any], style: str = "vlmevalkit") -> tuple[str | None, str]:
    """(system prompt or None, user text) for one question (a row with ``question`` and ``A``..``E``).

    ``vlmevalkit`` not yet resolved to a wrapper and ``vlmevalkit-dataset`` are the dataset's own
    prompt; ``llava`` is an alias of ``vlmevalkit:InternVLChat`` (the LLaVA-style text, no system).
    """
    from gmai_hf import vlmevalkit_prompts

    return vlmevalkit_prompts.build(row, "vlmevalkit:InternVLChat" if style == "llava" else style)


def build_prompt(row: Mapping[str, Any], style: str = "vlmevalkit") -> str:
    """The user text of :func:`build_messages`."""
    return build_messages(row, style)[1]
