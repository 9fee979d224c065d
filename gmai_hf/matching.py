"""VLMEvalKit's exact answer matching, rule for rule, as it is today and as it was in 2024.

The leaderboard's numbers come from VLMEvalKit's ``can_infer`` (``vlmeval/utils/matching_util.py``
in open-compass/VLMEvalKit) run on the raw model output; anything it cannot match counts as
wrong (unless an LLM judge is asked: :mod:`gmai_hf.judge`). Three modes (``MATCHING_MODES``):

``vlmevalkit`` (default): today's rules (as of commit a67ace50, 2026-06-17), in order:

1. ``Failed to obtain answer via API`` anywhere: no match.
2. One of VLMEvalKit's refusal strings anywhere: ``'Z'``.
3. Replace each of ``.()[],:;!*#{}`` with a space and split on whitespace. If exactly one present
   option letter occurs as a token (case-sensitive) and its first occurrence is among the last 4
   tokens, that letter (rule added in c3371551, 2025-08-04). If no present letter occurs but a
   token ``Z`` does: ``'Z'``.
4. ``(?i)(?:correct\\s+)?answer\\s+is\\s+\\**([ABCD])\\**`` anywhere: its letter, upper-cased,
   if it is a present option ("The answer is a lesion" -> A: no word boundary, any case; added in
   a67ace50, 2026-06-17).
5. Option texts, lower-cased: if the output is no longer than twice their total length (cap added
   in c3371551) and exactly one option text is a substring of it, that option.

``vlmevalkit-2024``: the rules of commit 69268c70 (2024-08-19), when GMAI-MMBench was added to
VLMEvalKit and the leaderboard was measured: rules 1 and 2; a lone present letter token anywhere
in the output (no last-4-tokens rule); a ``Z`` token; no "answer is" rule; option-text matching
without the length cap.

``strict``: today's rules minus the quirks that turn non-answers into letters (see :func:`match`).

VLMEvalKit's ``VERBOSE``-only rule (a lone ``A`` in outputs of more than 3 tokens rejected) is off
unless that environment variable is set there, and is not reproduced here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from gmai_hf import schema

MATCHING_MODES: tuple[str, ...] = ("vlmevalkit", "vlmevalkit-2024", "strict")
DEFAULT_MATCHING = "vlmevalkit"

API_FAILURE = "Failed to obtain answer via API"
REFUSALS: tuple[str, ...] = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
#: VLMEvalKit's answer for refusals: a letter no question has, so it is always wrong.
REFUSAL_LETTER = "Z"

_PUNCTUATION = str.maketrans(dict.fromkeys(".()[],:;!*#{}", " "))
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
# strict: the letter itself is case-sensitive and must end a word ("answer is a lesion" is no answer).
_STRICT_ANSWER_IS = re.compile(r"(?i:(?:correct\s+)?answer\s+is\s+)\**([A-E])\**(?!\w)")
# strict: the English article "A" ("A lesion is visible"), not the option letter ("A. liver", "(A)",
# "A is correct", "A or B").
_ARTICLE_A = re.compile(r"(?<!\S)A(?=\s+(?!(?:is|or|and|was|seems|appears|because|since)\b)[a-z])")
_ALL_LETTERS: dict[str, str | None] = dict.fromkeys(schema.OPTION_LETTERS)

Options = Mapping[str, str | None] | Sequence[str | None]


def present_options(options: Options | None) -> dict[str, str | None]:
    """The present options as ``{letter: text}`` in letter order.

    ``options`` is a mapping letter -> text or a sequence of texts in letter order (A first);
    ``None``, ``""`` and NaN mark absent options (what pandas' ``isna`` drops in VLMEvalKit).
    ``options=None`` means unknown texts: every letter A-E counts as present, texts as ``None``
    (so only letters can be matched).
    """
    if options is None:
        return dict(_ALL_LETTERS)
    if type(options) is list and len(options) <= len(schema.OPTION_LETTERS):  # the common case, inlined
        return {
            letter: text
            for letter, text in zip(schema.OPTION_LETTERS, options, strict=False)
            if text is not None and text != "" and text == text  # NaN != NaN
        }
    if isinstance(options, str):
        raise TypeError(
            f"options must be a list of option texts or a letter->text mapping, not the string {options!r}"
        )
    if isinstance(options, Mapping):
        items = list(options.items())
        for letter, _ in items:
            if letter not in schema.OPTION_LETTERS:
                raise ValueError(f"option letter {letter!r} is not one of {', '.join(schema.OPTION_LETTERS)}")
        items.sort()
    else:
        if len(options) > len(schema.OPTION_LETTERS):
            raise ValueError(
                f"{len(options)} options given; GMAI-MMBench questions have at most "
                f"{len(schema.OPTION_LETTERS)}"
            )
        items = list(zip(schema.OPTION_LETTERS, options, strict=False))
    return {letter: str(text) for letter, text in items if text is not None and text != "" and text == text}


def check_mode(mode: str) -> str:
    """``mode`` if it is a matching mode; ``ValueError`` naming the choices otherwise."""
    if mode not in MATCHING_MODES:
        raise ValueError(f"unknown matching {mode!r}: choose one of {', '.join(MATCHING_MODES)}")
    return mode


def can_infer(prediction: str | None, options: Options | None, mode: str = DEFAULT_MATCHING) -> str | bool:
    """VLMEvalKit's raw ``can_infer`` value: a present letter, ``'Z'`` (refusal) or ``False``.

    ``False`` (and only it) is what VLMEvalKit hands to its LLM judge.
    """
    return _infer("" if prediction is None else str(prediction), present_options(options), check_mode(mode))


def match(prediction: str | None, options: Options | None, mode: str = DEFAULT_MATCHING) -> str | None:
    """The present option letter ``prediction`` chooses, or ``None`` (no match, or a refusal).

    ``mode="strict"`` refuses VLMEvalKit's known false positives:

    - an ``A`` used as the article (followed by a space and a lower-case word other than "is",
      "or", "and", ...: "A lesion is visible") is not taken as option A by the letter rule;
    - "answer is" needs an upper-case letter standing alone ("The answer is a lesion" is not A,
      "answer is CT" is not C) and also reads E;
    - option texts match as whole words only ("ct" is not in "structure", "male" not in
      "female"), and of nested texts ("MRI" inside "T1 MRI") the longer one wins.

    Strict departs from VLMEvalKit only where one of these quirks decided: it then gives no
    match, or the option whose text the output names.
    """
    return chosen_letter(infer_choices(prediction, present_options(options), check_mode(mode)))


def chosen_letter(inferred: str | bool) -> str | None:
    """The letter a :func:`can_infer` value chooses: None for no match (``False``) and for a refusal."""
    return None if not inferred or inferred == REFUSAL_LETTER else str(inferred)


def infer_choices(
    prediction: str | None, choices: Mapping[str, str | None], mode: str = DEFAULT_MATCHING
) -> str | bool:
    """:func:`can_infer` on options already normalised by :func:`present_options`."""
    if prediction in choices:  # a bare present letter: every rule of every mode agrees, skip them
        return prediction
    return _infer("" if prediction is None else str(prediction), choices, mode)


def _infer(prediction: str, choices: Mapping[str, str | None], mode: str) -> str | bool:
    letter = _infer_option(prediction, choices, mode)
    if letter or any(text is None for text in choices.values()):
        return letter
    return _infer_text(prediction, choices, mode)


def _infer_option(prediction: str, choices: Mapping[str, str | None], mode: str) -> str | bool:
    if API_FAILURE in prediction:
        return False
    if any(refusal in prediction for refusal in REFUSALS):
        return REFUSAL_LETTER
    tokens = prediction.translate(_PUNCTUATION).split()
    found = [letter for letter in choices if letter in tokens]
    if len(found) == 1:
        if mode == "vlmevalkit-2024":
            return found[0]
        article = mode == "strict" and found[0] == "A" and _ARTICLE_A.search(prediction)
        if tokens.index(found[0]) > len(tokens) - 5 and not article:
            return found[0]
    elif not found and REFUSAL_LETTER in tokens:
        return REFUSAL_LETTER
    if mode == "vlmevalkit-2024":
        return False
    verbose = (_STRICT_ANSWER_IS if mode == "strict" else _ANSWER_IS).search(prediction)
    if verbose and verbose.group(1).upper() in choices:
        return verbose.group(1).upper()
    return False


def _infer_text(prediction: str, choices: Mapping[str, str | None], mode: str) -> str | bool:
    answer = prediction.lower()
    if mode != "vlmevalkit-2024" and len(answer) > 2 * sum(len(str(text)) for text in choices.values()):
        return False
    texts = {letter: str(text).lower() for letter, text in choices.items()}
    if mode == "strict":
        found = _whole_word_options(answer, texts)
    else:
        found = [letter for letter, text in texts.items() if text in answer]
    return found[0] if len(found) == 1 else False


def _whole_word_options(answer: str, texts: Mapping[str, str]) -> list[str]:
    """Options whose text occurs as whole words, ignoring occurrences inside a longer option's.

    One sweep over the occurrences sorted by start (longest first): an occurrence is inside
    another option's when, among the occurrences before it, the furthest-reaching one of another
    option reaches at least its end. Keeping the two furthest-reaching occurrences of distinct
    options is enough, so this is O(n log n) in the number of occurrences, not quadratic.
    """
    spans = sorted(
        (match.start(), -match.end(), letter)
        for letter, text in texts.items()
        if text
        for match in re.finditer(rf"(?<!\w){re.escape(text)}(?!\w)", answer)
    )
    found: set[str] = set()
    best: list[
        tuple[int, str]
    ] = []  # (end, letter) of the two furthest-reaching earlier spans, distinct letters
    group: list[tuple[int, str]] = []
    for i, (start, negative_end, letter) in enumerate(spans):
        end = -negative_end
        outer = next((reach for reach, other in best if other != letter), -1)
        if outer < end:
            found.add(letter)
        group.append((end, letter))
        if i + 1 == len(spans) or spans[i + 1][:2] != (start, negative_end):
            # identical spans never contain each other: they join the sweep only after the whole group
            for entry in group:
                best = _furthest_two([*best, entry])
            group = []
    return [letter for letter in texts if letter in found]


def _furthest_two(entries: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The furthest-reaching entry, and the furthest-reaching one of another letter."""
    entries.sort(reverse=True)
    first = entries[0]
    second = next((entry for entry in entries[1:] if entry[1] != first[1]), None)
    return [first] if second is None else [first, second]
