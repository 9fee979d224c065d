"""VLMEvalKit's exact answer matching: every rule and quirk, and equality with an independent reference.

VLMEvalKit can't be installed here, so the reference below re-implements
``vlmeval/utils/matching_util.py`` (``can_infer_option``, ``can_infer_text``, ``can_infer``) in the
shape of its source: the same function split, per-character ``str.replace``, a counting loop over
the choice letters, ``splits.index``, the module-level "answer is" regex, and the ``choices`` dict
of present options that ``build_choices`` makes (NaN options dropped). It shares no code with
``gmai_hf.matching``. ``vlmevalkit_hits`` mirrors ``eval_vanilla`` under the ``exact_matching``
policy (no judge: no match -> 'Z' -> wrong). ``test_scoring`` reuses the corpus and the reference.
"""

from __future__ import annotations

import random
import re

import pytest

from gmai_hf import matching
from gmai_hf.testing.data import make_rows

# --- Reference (VLMEvalKit, re-implemented independently) -------------------------------------

ANSWER_IS_PATTERN = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
REJECTIONS = [
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
]


def reference_can_infer_option(answer: str, choices: dict) -> str | bool:
    if "Failed to obtain answer via API" in answer:
        return False
    for rejection in REJECTIONS:
        if rejection in answer:
            return "Z"

    def how_many(words, candidates):
        n = 0
        for candidate in candidates:
            if candidate in words:
                n += 1
        return n

    modified = answer
    for char in ".()[],:;!*#{}":
        modified = modified.replace(char, " ")
    words = [w.strip() for w in modified.split()]
    n = how_many(words, choices)
    if n == 1:
        for letter in choices:
            if letter in words and words.index(letter) > len(words) - 5:
                return letter
    elif n == 0 and how_many(words, {"Z", ""}) == 1:
        return "Z"
    found = ANSWER_IS_PATTERN.search(answer)
    if found and found.group(1).upper() in choices:
        return found.group(1).upper()
    return False


def reference_can_infer_text(answer: str, choices: dict) -> str | bool:
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return False
    lowered = {k: str(v).lower() for k, v in choices.items()}
    candidates = [k for k in lowered if lowered[k] in answer]
    return candidates[0] if len(candidates) == 1 else False


def reference_can_infer(answer, choices: dict) -> str | bool:
    answer = str(answer)
    option = reference_can_infer_option(answer, choices)
    return option if option else reference_can_infer_text(answer, choices)


def reference_can_infer_2024(answer, choices: dict) -> str | bool:
    """``can_infer`` as VLMEvalKit had it at 69268c70 (2024-08-19), re-implemented in its shape:
    a lone present letter anywhere, a Z token, no "answer is" rule, text matching without a cap."""
    answer = str(answer)
    if "Failed to obtain answer via API" in answer:
        return False
    for rejection in REJECTIONS:
        if rejection in answer:
            return "Z"
    modified = answer
    for char in ".()[],:;!*#{}":
        modified = modified.replace(char, " ")
    words = [w.strip() for w in modified.split()]
    count = sum(1 for letter in choices if letter in words)
    if count == 1:
        for letter in choices:
            if letter in words:
                return letter
    elif count == 0 and sum(1 for z in {"Z", ""} if z in words) == 1:
        return "Z"
    lowered_answer = answer.lower()
    texts = {k: str(v).lower() for k, v in choices.items()}
    candidates = [k for k in texts if texts[k] in lowered_answer]
    return candidates[0] if len(candidates) == 1 else False


def build_choices(row: dict) -> dict:
    """VLMEvalKit's ``build_choices``: the present options (pandas reads empty fields as NaN)."""
    return {
        letter: row[letter]
        for letter in "ABCDE"
        if row.get(letter) is not None and row[letter] == row[letter]
    }


def vlmevalkit_hits(predictions, rows) -> list[int]:
    """``hit`` per question as ``mcq_vanilla_eval`` computes it without a judge."""
    hits = []
    for prediction, row in zip(predictions, rows, strict=True):
        opt = reference_can_infer(prediction, build_choices(row)) or "Z"
        hits.append(int(opt == row["answer"]))
    return hits


# --- A corpus of realistic free-form outputs ---------------------------------------------------

_TEMPLATES = (
    "{L}",
    "{l}",
    "{L}.",
    "({L})",
    "[{L}]",
    "**{L}**",
    "Answer: {L}",
    "Answer:{L}",
    "**Answer:** {L}\n",
    "{L}) {T}",
    "{L}. {T}",
    "Option {L}",
    "The answer is {L}.",
    "The correct answer is **{L}**",
    "the answer is {l}",
    "The answer is: {L}",
    "{T}",
    "{Tu}",
    "It is {T}",
    "This is a {T} image.",
    "{L} or {M}",
    "{L} and {M} are both possible.",
    "{L}, {M}",
    "Z",
    "Z. None of the above",
    "{L}. This is because the lesion is bright and well defined",
    "Let's think step by step. The image shows a region with abnormal signal. Therefore, the answer is {L}.",
    "The scan is typical. So the final answer is ({L})",
    "Looking at the image carefully, we can see several structures.\n\nAnswer: {L}",
    "The answer is a lesion in the {T}.",
    "The answer is clearly visible: {L} is correct because the contour follows the organ boundary.",
    "A lesion is visible in the image.",
    "A",
    "E",
    "",
    "   ",
    "1",
    "答案是 {L}",
    "Ｃ",
    "I'm sorry, I cannot answer that.",
    "Cannot determine the answer from the image.",
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided, I cannot answer.",
    "Failed to obtain answer via API. {L}",
    "{T} or {U}",
    "Neither {T} nor {U}.",
    "{L}: {T}. {M}: {U}.",
    "#{L}",
    "{{{L}}}",
    "The correct option is {M}, not {L}.",
    "correct answer is {l}",
    "Answer is {L}; confidence high",
)


def corpus(n_rows: int = 150, seed: int = 0) -> tuple[list[str | None], list[dict]]:
    """Every template on ``n_rows`` generated questions (2-5 options), with varied letters."""
    rng = random.Random(seed)
    predictions, rows = [], []
    for row in make_rows(n_rows, seed=seed, image_size=2, distinct_images=1, reference_every=0):
        present = [letter for letter in "ABCDE" if row[letter] is not None]
        for template in _TEMPLATES:
            letter = rng.choice([row["answer"], *present])
            other = rng.choice([x for x in "ABCDE" if x != letter])
            text, other_text = rng.choice(present), rng.choice(present)
            predictions.append(
                template.format(
                    L=letter,
                    l=letter.lower(),
                    M=other,
                    T=row[text],
                    Tu=row[text].upper(),
                    U=row[other_text],
                )
            )
            rows.append(row)
        predictions.append(None)
        rows.append(row)
    return predictions, rows


def _options(row: dict) -> list[str | None]:
    return [row[letter] for letter in "ABCDE"]


# --- Tests -------------------------------------------------------------------------------------

FACTS_OPTIONS = ["CT", "MRI", "X-ray", "Ultrasound"]


@pytest.mark.parametrize(
    ("prediction", "expected", "expected_strict"),
    [
        # the examples of shared/GMAI_MMBENCH.md
        ("B.", "B", "B"),
        ("(C)", "C", "C"),
        ("**C**", "C", "C"),
        ("Answer:B", "B", "B"),
        ("B) MRI", "B", "B"),
        ("A cat", "A", None),
        ("It is MRI", "B", "B"),
        ("b", None, None),
        ("CT or MRI", None, None),
        ("B. This is because the lesion is bright", None, None),
        ("The answer is a lesion", "A", None),
        # letters: position rule, first occurrence among the last 4 tokens
        ("one two three four D", "D", "D"),
        ("D one two three four", None, None),
        ("one D two three four", "D", "D"),
        ("D. one two three D", None, None),
        ("Answer: (D) [final]", "D", "D"),
        ("{A}; #B!", None, None),
        ("E", None, None),
        ("A or E", "A", "A"),
        ("A is correct", "A", "A"),
        ("A large mass", "A", None),
        ("A or B", None, None),
        # the 'answer is' pattern: anywhere, case-insensitive, A-D only, no word boundary
        ("The correct answer is **b** as the image shows two bright areas in the cortex", "B", None),
        ("After a long analysis of every structure shown here the answer is D for sure", "D", "D"),
        ("After a long analysis of every structure shown here the answer is clearly a cyst", "C", None),
        ("answer is CT", "C", "A"),  # the pattern reads the C of CT; strict matches the text
        # refusals and Z
        ("Cannot determine the answer", None, None),
        ("Z", None, None),
        ("Failed to obtain answer via API", None, None),
        # option texts: lower-cased substrings, exactly one, length limit
        ("x-RAY", "C", "C"),
        ("ultrasound shows it", "D", "D"),
        ("the structure", "A", None),
        ("mri " * 20, None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_rules_and_quirks(prediction: str | None, expected: str | None, expected_strict: str | None) -> None:
    assert matching.match(prediction, FACTS_OPTIONS) == expected
    assert matching.match(prediction, FACTS_OPTIONS, mode="strict") == expected_strict


def test_can_infer_raw_values() -> None:
    assert matching.can_infer("Cannot determine the answer", FACTS_OPTIONS) == "Z"
    assert matching.can_infer("I can't process this file. B", FACTS_OPTIONS) == "Z"
    assert matching.can_infer("Z", FACTS_OPTIONS) == "Z"
    assert matching.can_infer("Failed to obtain answer via API", FACTS_OPTIONS) is False
    assert matching.can_infer("nothing useful", FACTS_OPTIONS) is False
    assert matching.can_infer("(B)", FACTS_OPTIONS) == "B"


def test_strict_nested_option_texts() -> None:
    sexes = ["male", "female"]
    assert matching.match("female", sexes) is None  # "male" is inside "female": two candidates
    assert matching.match("female", sexes, mode="strict") == "B"
    assert matching.match("male", sexes, mode="strict") == "A"
    mri = ["MRI", "T1 MRI", "CT"]
    assert matching.match("T1 MRI", mri, mode="strict") == "B"
    assert matching.match("MRI, not T1 MRI", mri, mode="strict") is None


@pytest.mark.parametrize(
    "options",
    [
        ["CT", "MRI", None, None, None],
        ["CT", "MRI"],
        ("CT", "MRI", ""),
        {"A": "CT", "B": "MRI"},
        {"B": "MRI", "A": "CT", "C": None},
        ["CT", "MRI", float("nan")],
    ],
)
def test_option_forms(options: object) -> None:
    assert matching.present_options(options) == {"A": "CT", "B": "MRI"}
    assert matching.match("C", options) is None  # C is absent: not an option
    assert matching.match("It is MRI", options) == "B"


def test_without_options_only_letters_match() -> None:
    assert matching.match("The answer is (E)", None) == "E"
    assert matching.match("It is MRI", None) is None
    assert matching.match("None of them", None) is None  # no option text "None" to find


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"F": "x"}, ValueError, "option letter 'F'"),
        (["a", "b", "c", "d", "e", "f"], ValueError, "6 options"),
        ("ABCD", TypeError, "not the string"),
    ],
)
def test_bad_options(options: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        matching.match("A", options)


def test_verbose_environment_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERBOSE", "1")
    assert matching.match("I pick option A here", FACTS_OPTIONS) == "A"


def test_corpus_equals_reference() -> None:
    predictions, rows = corpus()
    assert len(predictions) > 8000
    outcomes = set()
    for prediction, row in zip(predictions, rows, strict=True):
        # None is "no output"; VLMEvalKit has no None (its str(None) would be the text "None")
        expected = reference_can_infer("" if prediction is None else prediction, build_choices(row))
        got = matching.can_infer(prediction, _options(row))
        assert got == expected, (prediction, build_choices(row))
        chosen = matching.match(prediction, _options(row))
        assert chosen == (None if expected in (False, "Z") else expected), prediction
        outcomes.add("Z" if expected == "Z" else "letter" if expected else "none")
    assert outcomes == {"Z", "letter", "none"}


def test_2024_matcher_equals_the_2024_reference_on_the_corpus() -> None:
    predictions, rows = corpus()
    changed = 0
    for prediction, row in zip(predictions, rows, strict=True):
        text = "" if prediction is None else prediction
        expected = reference_can_infer_2024(text, build_choices(row))
        assert matching.can_infer(prediction, _options(row), mode="vlmevalkit-2024") == expected, prediction
        changed += expected != reference_can_infer(text, build_choices(row))
    assert changed > 500, "the two VLMEvalKit versions differ on this corpus, as on real outputs"


@pytest.mark.parametrize(
    ("prediction", "today", "then"),
    [
        ("B. This is because the lesion is bright", None, "B"),  # the last-4-tokens rule came later
        ("I think the answer is B because the lesion is bright", "B", "B"),
        ("The answer is a lesion", "A", None),  # the "answer is" quirk came later
        ("The answer is definitely MRI", "D", "B"),
        ("ct", "A", "A"),
    ],
)
def test_the_two_vlmevalkit_versions_on_known_cases(
    prediction: str, today: str | None, then: str | None
) -> None:
    options = {"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}
    assert matching.match(prediction, options) == today
    assert matching.match(prediction, options, mode="vlmevalkit-2024") == then


def test_strict_only_refuses_false_positives_on_the_corpus() -> None:
    """Strict differs from VLMEvalKit by refusing a letter, or by replacing one the "answer is" quirk read."""
    predictions, rows = corpus(n_rows=40, seed=1)
    changed = 0
    for prediction, row in zip(predictions, rows, strict=True):
        default = matching.match(prediction, _options(row))
        strict = matching.match(prediction, _options(row), mode="strict")
        if strict != default:
            changed += 1
            quirk = re.search(r"(?i:answer\s+is\s+)\**(?:[a-d]|[A-D]\**\w)", prediction)
            assert strict is None or default is None or quirk, prediction
    assert changed > 0


def test_strict_matching_is_not_quadratic_in_nested_option_texts() -> None:
    """32 KB of nested option texts: the pairwise check of old took minutes here (1.3 s at 16 KB)."""
    import time

    options = ["a", "a a", "a " * 16_000, "b"]
    prediction = "a " * 16_000  # option C, whose text holds thousands of A's and B's
    started = time.perf_counter()
    assert matching.match(prediction, options, mode="strict") == "C"
    assert time.perf_counter() - started < 2.0


def test_strict_sweep_equals_the_pairwise_definition() -> None:
    import random
    import re

    def pairwise(answer: str, texts: dict[str, str]) -> list[str]:
        spans = {
            letter: [m.span() for m in re.finditer(rf"(?<!\w){re.escape(text)}(?!\w)", answer)]
            for letter, text in texts.items()
        }
        return [
            letter
            for letter, own in spans.items()
            if any(
                not any(
                    (a, b) != (c, d) and c <= a and b <= d
                    for other, theirs in spans.items()
                    if other != letter
                    for c, d in theirs
                )
                for a, b in own
            )
        ]

    rng = random.Random(0)
    words = ["mri", "t1 mri", "t1", "ct", "ct scan", "scan", "a", "a b", "b", "x"]
    for _ in range(5000):
        texts = {letter: rng.choice(words) for letter in "ABCDE"[: rng.randint(2, 5)]}
        answer = " ".join(rng.choice([*words, "foo"]) for _ in range(rng.randint(0, 12)))
        assert matching._whole_word_options(answer, texts) == pairwise(answer, texts), (texts, answer)
