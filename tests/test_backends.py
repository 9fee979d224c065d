"""Backends: tiny LLaVA, Gemma 3 and Idefics3 through the transformers backend, and the random baseline."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from gmai_hf import prompts, schema
from gmai_hf.backends import Question, QuestionError, load_backend
from gmai_hf.backends.hf import HFBackend, HFPreparer, letter_token_ids
from gmai_hf.backends.random import RandomBackend
from gmai_hf.testing.data import make_rows
from gmai_hf.testing.models import TINY_MODELS


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def hf_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HFBackend:
    path = TINY_MODELS[request.param](tmp_path_factory.mktemp(request.param))
    backend = load_backend("transformers", str(path), "cpu")
    assert isinstance(backend, HFBackend)
    return backend


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _questions(n: int) -> list[Question]:
    rows = make_rows(n, seed=3, reference_every=0)
    # different image sizes and prompt lengths, so batches really need resizing and padding
    return [
        Question(
            index=row["index"],
            prompt=prompts.build_prompt(row, "vlmevalkit"),
            options=prompts.present_options(row),
            image_bytes=_png(Image.new("RGB", (20 + 9 * i, 40 + 7 * i), (30 * i, 90, 10))),
        )
        for i, row in enumerate(rows)
    ]


def test_batched_equals_one_at_a_time(hf_backend: HFBackend) -> None:
    prepare = hf_backend.preparer()
    items = [prepare(q) for q in _questions(5)]
    assert len({int(item.features["input_ids"].shape[1]) for item in items}) > 1, "lengths must differ"
    batched = hf_backend.generate(items, 6)
    assert [a.text for a in batched] == [hf_backend.generate([item], 6)[0].text for item in items]
    assert [a.index for a in batched] == [item.index for item in items]
    # random weights never emit the end token: every answer used all 6 tokens and says so
    assert all(a.truncated for a in batched)
    assert not any(a.truncated for a in hf_backend.generate(items[:2], 40) if len(a.text) < 10)
    letters = hf_backend.score_letters(items)
    assert letters == [hf_backend.score_letters([item])[0] for item in items]
    assert all(letter in item.letters for letter, item in zip(letters, items, strict=True))


def test_prompt_goes_through_the_chat_template(hf_backend: HFBackend) -> None:
    question = _questions(1)[0]
    item = hf_backend.preparer()(question)
    ids = item.features["input_ids"][0].tolist()
    text = hf_backend.tokenizer.decode(ids)
    assert question.prompt.strip() in text
    # it ends with the generation prompt the model's template adds (e.g. "ASSISTANT:")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    template = hf_backend.processor.apply_chat_template
    closed = template(messages, add_generation_prompt=False, tokenize=False)
    generation_prompt = template(messages, add_generation_prompt=True, tokenize=False)[len(closed) :]
    assert generation_prompt.strip() and text.rstrip().endswith(generation_prompt.strip())
    # a template that writes BOS itself (Gemma 3, whose tokenizer also adds one) must not get two
    assert ids.count(hf_backend.tokenizer.bos_token_id) <= 1


def test_letter_tokens_decode_to_their_letter(hf_backend: HFBackend) -> None:
    ids = letter_token_ids(hf_backend.tokenizer)
    assert set(ids) == set(schema.OPTION_LETTERS)
    seen = [i for letter_ids in ids.values() for i in letter_ids]
    assert len(seen) == len(set(seen)), "two letters share a token"
    for letter, letter_ids in ids.items():
        assert [hf_backend.tokenizer.decode([i]).strip() for i in letter_ids] == [letter] * len(letter_ids)
    # the token the model emits right after the generation prompt is among them
    template = hf_backend.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    prompt_ids = hf_backend.tokenizer.encode(template, add_special_tokens=False)
    for letter in ("A", "C"):
        answer_ids = hf_backend.tokenizer.encode(template + " " + letter, add_special_tokens=False)
        assert answer_ids[: len(prompt_ids)] == prompt_ids
        assert answer_ids[-1] in ids[letter] or answer_ids[len(prompt_ids)] in ids[letter]


def test_too_long_prompt_is_a_question_error(hf_backend: HFBackend) -> None:
    preparer = HFPreparer(hf_backend.processor, max_positions=40)
    with pytest.raises(QuestionError, match="fills the model's 40 positions"):
        preparer(_questions(1)[0])


def test_model_without_chat_template_is_refused(tmp_path: Path) -> None:
    path = TINY_MODELS["llava"](tmp_path / "llava")
    for name in ("chat_template.jinja", "chat_template.json"):
        (path / name).unlink(missing_ok=True)
    with pytest.raises(ValueError, match="chat template"):
        load_backend("transformers", str(path), "cpu")


def test_random_baseline_is_seeded_uniform_and_loads_nothing() -> None:
    backend = load_backend("random", "random", seed=7)
    assert isinstance(backend, RandomBackend) and not backend.needs_image
    prepare = backend.preparer()
    items = [prepare(Question(i, "q", {k: "x" for k in "ABCD"})) for i in range(4000)]
    first = [answer.text for answer in backend.generate(items, 1)]
    again = [answer.text for answer in backend.generate(items[::-1], 1)[::-1]]
    assert first == again, "a guess must not depend on batching or order"
    assert first == backend.score_letters(items)
    counts = Counter(first)
    assert set(counts) == set("ABCD") and all(900 < c < 1100 for c in counts.values()), counts
    assert first != [answer.text for answer in load_backend("random", "random", seed=8).generate(items, 1)]
    two = prepare(Question(0, "q", {"A": "male", "B": "female"}))
    assert {backend._guess(two)} <= {"A", "B"}
