"""The two prompts must match VLMEvalKit's character for character (leaderboard comparability)."""

from __future__ import annotations

import pytest

from gmai_hf import prompts

ROW = {"question": "Which organ is shown?", "A": "liver", "B": "kidney", "C": "spleen", "D": None, "E": None}


def test_vlmevalkit_prompt_exact() -> None:
    assert prompts.build_prompt(ROW, "vlmevalkit") == (
        "Question: Which organ is shown?\n"
        "Options:\n"
        "A. liver\n"
        "B. kidney\n"
        "C. spleen\n"
        "Please select the correct answer from the options above. \n"
    )


def test_llava_prompt_exact() -> None:
    assert prompts.build_prompt(ROW, "llava") == (
        "Which organ is shown?\nA. liver\nB. kidney\nC. spleen\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_present_options_skips_empty_and_missing() -> None:
    row = {**ROW, "C": "", "E": "male"}
    assert prompts.present_options(row) == {"A": "liver", "B": "kidney", "E": "male"}
    assert "C." not in prompts.build_prompt(row) and "E. male\n" in prompts.build_prompt(row)


def test_multiline_question_and_literal_none_option_are_kept() -> None:
    row = {**ROW, "question": "Look.\nWhat is it?", "D": "None"}
    text = prompts.build_prompt(row, "vlmevalkit")
    assert text.startswith("Question: Look.\nWhat is it?\nOptions:\n")
    assert "D. None\n" in text


def test_unknown_style_names_the_choices() -> None:
    with pytest.raises(ValueError, match="vlmevalkit, vlmevalkit-dataset"):
        prompts.build_prompt(ROW, "chatgpt")
