"""The LLM judge: VLMEvalKit's prompts byte for byte, its extract_answer_from_item letter for letter
(but never a random letter), the cache, and the judge through run, score and the metric.

Judges here are real servers on loopback: ``transformers serve`` with a tiny model (its replies
are deterministic noise), and a scripted server (the test proxy answering by rule) whose replies
exercise every branch: a letter at once, a letter on the second or third try, Z, and never.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from test_matching import build_choices, reference_can_infer

from gmai_hf import SAMPLE_DIR, client, judge, results, runner, scoring
from gmai_hf.client import ClientOptions
from gmai_hf.judge import Judge
from gmai_hf.runner import RunConfig
from gmai_hf.testing.data import make_rows
from gmai_hf.testing.models import build_tiny_llava
from gmai_hf.testing.proxy import FaultProxy
from gmai_hf.testing.server import Server, serve

#: sha256 of VLMEvalKit's build_prompt / build_prompt_cn templates, computed from its source
#: (vlmeval/dataset/utils/multiple_choice.py, identical at 69268c70 and at e8e78f05).
VLMEVALKIT_PROMPT_SHA256 = "133b2beaa0ce149aab95c6d01d4629f034e8861c723fc302ab3853a41e690c86"
VLMEVALKIT_PROMPT_CN_SHA256 = "6cd5198da4ff3d4179a6db5bf17eeb181fa9e55caba876e632f7c583ac0eeb7c"


# --- VLMEvalKit's judge path, re-implemented in its shape (shares no code with gmai_hf.judge) ----


def vlmevalkit_prompt(question: str, choices: dict, prediction: str) -> str:
    option_str = "There are several options: \n"
    for c, content in choices.items():
        option_str += f"{c}. {content}\n"
    tmpl = (
        "You are an AI assistant who will help me to match "
        "an answer with several options of a single-choice question. "
        "You are provided with a question, several options, and an answer, "
        "and you need to find which option is most similar to the answer. "
        "If the meaning of all options are significantly different from the answer, output Z. "
        "Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n"
        "Example 1: \n"
        "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
        "Answer: a cute teddy bear\nYour output: A\n"
        "Example 2: \n"
        "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
        "Answer: Spider\nYour output: Z\n"
        "Example 3: \n"
        "Question: {}?\nOptions: {}\nAnswer: {}\nYour output: "
    )
    assert hashlib.sha256(tmpl.encode()).hexdigest() == VLMEVALKIT_PROMPT_SHA256
    return tmpl.format(question, option_str, prediction)


def vlmevalkit_extract(generate: Callable[[str], str], item: dict) -> str:
    """``extract_answer_from_item`` with a judge: the letter, or "random" where it would draw one."""
    choices = build_choices(item)
    prompt = vlmevalkit_prompt(item["question"], choices, item["prediction"])
    ret = reference_can_infer(item["prediction"], choices)
    if ret:
        return ret
    retry = 3
    while retry:
        ans = generate(prompt)
        if "Failed to obtain answer via API" not in ans:
            ret = reference_can_infer(ans, choices)
            if ret:
                return ret
        retry -= 1
    return "random"


# --- fixtures -------------------------------------------------------------------------------------

_ANSWERS = (
    "{L}",
    "I think it shows {T}",
    "a lesion of some kind",
    "possibly {T} or {U}",
    "hard to say, looks bright",
    "Cannot determine the answer",
    "the structure looks {T}-like",
    "",
)


def _items(n: int = 40, seed: int = 2) -> list[dict]:
    rows = make_rows(n, seed=seed, reference_every=0, distinct_images=1, image_size=2)
    items = []
    for i, row in enumerate(rows):
        present = [letter for letter in "ABCDE" if row[letter] is not None]
        letter, other = present[i % len(present)], present[(i + 1) % len(present)]
        style = _ANSWERS[i % len(_ANSWERS)]
        prediction = style.format(L=letter, T=row[letter], U=row[other])
        items.append({**row, "prediction": prediction})
    return items


def scripted(prompt: str) -> str:
    """A judge that reads the "Answer:" of VLMEvalKit's prompt by rule, sometimes only on a later try."""
    answer = prompt.rsplit("\nAnswer: ", 1)[1].rsplit("\nYour output: ", 1)[0]
    options = dict(re.findall(r"^([A-E])\. (.*)$", prompt.split("Example 3:")[1], re.M))
    scripted.calls[answer] = scripted.calls.get(answer, 0) + 1
    if "bright" in answer:  # unreadable twice, then a letter
        return "B" if scripted.calls[answer] >= 3 else "I am not sure which one."
    if "lesion" in answer:
        return "Z"
    if "looks" in answer:
        return "none of these"  # never readable: VLMEvalKit would draw a random letter
    named = [letter for letter, text in options.items() if text.lower() in answer.lower()]
    return f"The option is {named[0]}" if named else "Z"


scripted.calls = {}


@pytest.fixture
def scripted_judge() -> Iterator[FaultProxy]:
    scripted.calls.clear()
    with FaultProxy(None, reply=scripted) as server:
        yield server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = build_tiny_llava(tmp_path_factory.mktemp("judge-model") / "llava")
    with serve(folder, tmp_path_factory.mktemp("judge-log") / "serve.log") as running:
        yield running


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMAI_HF_JUDGE_CACHE", str(tmp_path / "judge-cache"))
    monkeypatch.setattr(client, "BACKOFF_S", 0.05)


def _ours(judge_: Judge, items: list[dict]) -> tuple[list[str | None], list[str | None]]:
    choices = [build_choices(item) for item in items]
    return scoring.choose(
        [item["prediction"] for item in items],
        choices,
        "vlmevalkit",
        judge_,
        [item["question"] for item in items],
    )


# --- tests ----------------------------------------------------------------------------------------


def test_the_prompts_are_vlmevalkits_byte_for_byte() -> None:
    assert hashlib.sha256(judge.JUDGE_TEMPLATE.encode()).hexdigest() == VLMEVALKIT_PROMPT_SHA256
    assert judge.PROMPT_SHA256 == VLMEVALKIT_PROMPT_SHA256
    assert hashlib.sha256(judge.JUDGE_TEMPLATE_CN.encode()).hexdigest() == VLMEVALKIT_PROMPT_CN_SHA256
    for item in _items(12):
        choices = build_choices(item)
        assert judge.judge_prompt(item["question"], choices, item["prediction"]) == vlmevalkit_prompt(
            item["question"], choices, item["prediction"]
        )
    chinese = judge.judge_prompt("图中是什么器官", {"A": "肝", "B": "肾"}, "肝脏")
    assert (
        chinese.startswith("你是一个帮助我匹配答案")
        and "问题: 图中是什么器官?\n选项: There are several options: \nA. 肝\nB. 肾\n" in chinese
    )


def test_final_letters_equal_vlmevalkits_except_its_random_draws(scripted_judge: FaultProxy) -> None:
    items = _items()
    ours, how = _ours(Judge("scripted", ClientOptions(base_url=scripted_judge.base_url)), items)
    raw = openai.OpenAI(base_url=scripted_judge.base_url, api_key="x", max_retries=0)

    def generate(prompt: str) -> str:
        reply = raw.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=8
        )
        return reply.choices[0].message.content

    scripted.calls.clear()
    theirs = [vlmevalkit_extract(generate, item) for item in items]
    outcomes = set()
    for mine, matched_by, their in zip(ours, how, theirs, strict=True):
        if their == "random":
            assert mine is None and matched_by == "judge_failed"
        else:
            assert mine == (None if their == "Z" else their)
        outcomes.add((matched_by, their if their in ("random", "Z") else "letter"))
    assert {("exact", "letter"), ("judge", "letter"), ("judge", "Z"), ("judge_failed", "random")} <= outcomes
    assert ("exact", "Z") in outcomes  # a refusal is final: VLMEvalKit does not ask its judge


def test_the_same_with_a_real_model_server_as_judge(served: Server) -> None:
    items = _items(24, seed=5)
    ours, how = _ours(Judge(served.model, ClientOptions(base_url=served.base_url), max_tokens=8), items)
    raw = openai.OpenAI(base_url=served.base_url, api_key="x", max_retries=0)

    def generate(prompt: str) -> str:
        reply = raw.chat.completions.create(
            model=served.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=8,
            seed=0,
        )
        return reply.choices[0].message.content

    theirs = [vlmevalkit_extract(generate, item) for item in items]
    for mine, matched_by, their in zip(ours, how, theirs, strict=True):
        assert (mine, matched_by == "judge_failed") == (
            (None, True) if their == "random" else (None if their == "Z" else their, False)
        )
    assert "judge_failed" in how or "judge" in how


def test_verdicts_are_cached_and_a_rerun_makes_no_call(scripted_judge: FaultProxy) -> None:
    items = _items()
    first = Judge("scripted", ClientOptions(base_url=scripted_judge.base_url))
    letters, _ = _ours(first, items)
    stats = first.describe()
    assert stats["calls"] > 0 and stats["cached"] == 0 and stats["decided"] + stats["failed"] > 0
    assert stats["prompt_sha256"] == VLMEVALKIT_PROMPT_SHA256
    requests = len(scripted_judge.log)
    again = Judge("scripted", ClientOptions(base_url=scripted_judge.base_url))
    assert _ours(again, items)[0] == letters
    assert len(scripted_judge.log) == requests, "a rerun makes zero judge calls"
    assert again.describe()["calls"] == 0 and again.describe()["cached"] == stats["decided"] + stats["failed"]


def test_a_judge_that_cannot_be_reached_is_not_cached(tmp_path: Path) -> None:
    from gmai_hf.testing.server import free_port

    with FaultProxy(None, decide=lambda key, seen: "500", reply=scripted) as failing:
        broken = Judge("scripted", ClientOptions(base_url=failing.base_url, max_retries=1))
        _letters, how = _ours(broken, _items(8))
    unread = [h for h in how if h != "exact"]
    assert unread and all(h == "judge_failed" for h in unread) and broken.describe()["decided"] == 0
    with FaultProxy(None, reply=scripted) as healthy:
        fixed = Judge("scripted", ClientOptions(base_url=healthy.base_url))
        fixed.cache_path = broken.cache_path  # the same judge, now reachable: the failures are asked again
        fixed._cache = fixed._load_cache()
        _, how = _ours(fixed, _items(8))
        assert fixed.describe()["calls"] > 0 and "judge" in how
    with pytest.raises(ValueError, match="cannot reach the judge server"):
        _ours(Judge("m", ClientOptions(base_url=f"http://127.0.0.1:{free_port()}/v1")), _items(8))


def test_a_run_with_a_judge_records_it_and_reports_its_share(
    tmp_path: Path, scripted_judge: FaultProxy
) -> None:
    config = RunConfig(
        model="random",
        output_dir=tmp_path / "out",
        data_dir=str(SAMPLE_DIR),
        limit=30,
        judge={"model": "scripted", "base_url": scripted_judge.base_url},
    )
    assert runner.run(config) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["run"]["judge"] == {"model": "scripted", "base_url": scripted_judge.base_url}
    assert results["judge"]["prompt_sha256"] == VLMEVALKIT_PROMPT_SHA256
    assert results["judge"]["calls"] == 0  # the random baseline answers letters: nothing for the judge
    assert "the LLM judge scripted read 0 answer(s)" in (tmp_path / "out" / "report.md").read_text()


def test_score_with_a_judge(tmp_path: Path, scripted_judge: FaultProxy, data_dir: Path) -> None:
    import argparse

    from gmai_hf.commands import score

    rows = score.load_questions(data_dir, "validation")
    items = _items(len(rows), seed=3)
    path = tmp_path / "Model_GMAI-MMBench_VAL.jsonl"
    path.write_text(
        "".join(
            json.dumps({"index": r["index"], "prediction": i["prediction"]}) + "\n"
            for r, i in zip(rows, items, strict=False)
        )
    )
    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    args = ["--data-dir", str(data_dir), "--judge", "scripted", "--judge-base-url", scripted_judge.base_url]
    for output in ("first", "second"):
        assert score.main(parser.parse_args([str(path), *args, "--output-dir", str(tmp_path / output)])) == 0
    first = json.loads((tmp_path / "first" / "results.json").read_text())
    second = json.loads((tmp_path / "second" / "results.json").read_text())
    assert first["judge"]["decided"] > 0 and first["judge"]["calls"] > 0
    assert second["judge"]["calls"] == 0 and second["accuracy"] == first["accuracy"]
    records = [json.loads(line) for line in (tmp_path / "first" / "predictions.jsonl").open()]
    assert {r["matched_by"] for r in records} >= {"exact", "judge", "judge_failed"}
    assert sum(r["matched_by"] == "judge_failed" for r in records) == first["judge"]["failed"]


def test_the_metric_takes_a_judge(scripted_judge: FaultProxy) -> None:
    import evaluate

    import gmai_hf

    items = _items(16)
    metric = evaluate.load(gmai_hf.METRIC_PATH)
    kwargs = {
        "predictions": [item["prediction"] for item in items],
        "references": [item["answer"] for item in items],
        "options": [[item[letter] for letter in "ABCDE"] for item in items],
        "questions": [item["question"] for item in items],
    }
    without = metric.compute(**kwargs)
    judged = metric.compute(**kwargs, judge={"model": "scripted", "base_url": scripted_judge.base_url})
    assert without["judge"] is None and judged["judge"]["decided"] > 0
    assert judged["unmatched"] < without["unmatched"]
    ours, _ = _ours(Judge("scripted", ClientOptions(base_url=scripted_judge.base_url)), items)
    assert judged["correct"] == sum(o == item["answer"] for o, item in zip(ours, items, strict=False))


def test_a_failed_question_is_never_sent_to_the_judge(scripted_judge: FaultProxy) -> None:
    rows = [{**item, "index": i} for i, item in enumerate(_items(4))]
    predictions = {0: "maybe the first one", 1: "I cannot tell"}
    errors = {2: "HTTP 500", 3: "image cannot be decoded"}
    records = results.build_records(
        rows, predictions, errors, judge=Judge("scripted", ClientOptions(base_url=scripted_judge.base_url))
    )
    assert set(scripted.calls) == set(predictions.values())  # only the answered ones were asked about
    assert [r["matched_by"] for r in records[:2]] == ["judge", "judge"]
    assert [r["matched_by"] for r in records[2:]] == [None, None]
    assert [r["choice"] for r in records[2:]] == [None, None]


def test_the_judges_reply_is_read_when_option_texts_are_unknown() -> None:
    with FaultProxy(None, reply=lambda prompt: "B") as server:
        judge_ = Judge("always-b", ClientOptions(base_url=server.base_url))
        unknown = {letter: None for letter in "ABCD"}
        chosen, how = scoring.choose(["the second one, I think"], [unknown], "vlmevalkit", judge_, ["q?"])
    assert (chosen, how) == (["B"], ["judge"])


def test_each_matching_mode_has_its_own_verdicts(tmp_path: Path) -> None:
    """A reply is read with the matcher of the mode: a verdict read one way is not reused the other."""
    base = "http://127.0.0.1:9/v1"
    today = Judge("m", ClientOptions(base_url=base), matching_mode="vlmevalkit")
    then = Judge("m", ClientOptions(base_url=base), matching_mode="vlmevalkit-2024")
    assert today.cache_path != then.cache_path
    assert Judge("m", ClientOptions(base_url=base), matching_mode="strict").cache_path == today.cache_path


# --- the cache is checked before it counts --------------------------------------------------------

_CHOICES = {"A": "liver", "B": "spleen", "C": "kidney"}
_ITEM = ("Which organ is shown?", _CHOICES, "the second organ, I think")


@pytest.fixture
def always_b() -> Iterator[FaultProxy]:
    with FaultProxy(None, reply=lambda prompt: "B") as server:
        yield server


def _cached_once(server: FaultProxy) -> Path:
    first = Judge("always-b", ClientOptions(base_url=server.base_url))
    assert [v.letter for v in first.decide([_ITEM])] == ["B"]
    return first.cache_path


def _edit_entries(path: Path, **changes: object) -> None:
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**entry, **changes}) + "\n" for entry in entries))


@pytest.mark.parametrize("letter", ["E", "A"], ids=["not-an-option", "not-what-the-reply-says"])
def test_an_edited_cached_letter_is_asked_again(
    always_b: FaultProxy, letter: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _cached_once(always_b)
    _edit_entries(path, letter=letter)  # E: no option of the question; A: the reply stored says B
    asked = len(always_b.log)
    again = Judge("always-b", ClientOptions(base_url=always_b.base_url))
    assert [(v.letter, v.cached) for v in again.decide([_ITEM])] == [("B", False)]
    assert len(always_b.log) == asked + 1 and again.describe()["cache_invalid"] == 1
    assert "1 verdict(s) in the judge cache" in caplog.text and str(path) in caplog.text
    # the new verdict was stored after the bad one
    third = Judge("always-b", ClientOptions(base_url=always_b.base_url))
    assert [(v.letter, v.cached) for v in third.decide([_ITEM])] == [("B", True)]


def test_an_edited_reply_with_its_letter_is_checked_against_the_options(always_b: FaultProxy) -> None:
    path = _cached_once(always_b)
    _edit_entries(path, letter="E", replies=["E"])  # consistent, but E is no option of the question
    again = Judge("always-b", ClientOptions(base_url=always_b.base_url))
    assert [(v.letter, v.cached) for v in again.decide([_ITEM])] == [("B", False)]


def test_a_verdict_of_another_judge_or_prompt_is_not_used(always_b: FaultProxy) -> None:
    path = _cached_once(always_b)
    other = Judge("always-b", ClientOptions(base_url=always_b.base_url), matching_mode="vlmevalkit-2024")
    other.cache_path.parent.mkdir(parents=True, exist_ok=True)
    other.cache_path.write_bytes(path.read_bytes())  # copied into the file of another reply matcher
    other._cache = other._load_cache()
    asked = len(always_b.log)
    assert [v.cached for v in other.decide([_ITEM])] == [False] and len(always_b.log) == asked + 1


@pytest.mark.parametrize(
    "bad",
    [
        b"[1, 2]\n",
        b'{"key": "x", "letter": "B"}\n',
        b'{"key": "' + b"0" * 64 + b'", "letter": 3, "replies": []}\n',
    ],
    ids=["not-an-object", "no-replies", "letter-not-text"],
)
def test_a_malformed_entry_sets_the_file_aside_and_keeps_the_good_ones(
    always_b: FaultProxy, bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = _cached_once(always_b)
    path.write_bytes(bad + path.read_bytes())
    asked = len(always_b.log)
    again = Judge("always-b", ClientOptions(base_url=always_b.base_url))
    assert [(v.letter, v.cached) for v in again.decide([_ITEM])] == [("B", True)]
    assert len(always_b.log) == asked
    aside = list(path.parent.glob(f"{path.name}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(bad)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(path) in warnings[0] and aside[0].name in warnings[0]
    assert "line 1" in warnings[0]
    caplog.clear()
    Judge("always-b", ClientOptions(base_url=always_b.base_url))  # the new file reads cleanly
    assert not caplog.records


def test_an_undecodable_file_is_set_aside_with_one_warning(
    always_b: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    path = Judge("always-b", ClientOptions(base_url=always_b.base_url)).cache_path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe\x00garbage\n" * 3)
    again = Judge("always-b", ClientOptions(base_url=always_b.base_url))
    assert [(v.letter, v.cached) for v in again.decide([_ITEM])] == [("B", False)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(path) in warnings[0] and ".corrupt-" in warnings[0]
    assert [json.loads(line)["letter"] for line in path.read_text().splitlines()] == ["B"]


def test_a_line_cut_by_a_kill_is_no_corruption(
    always_b: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    path = _cached_once(always_b)
    path.write_bytes(path.read_bytes() + b'{"key": "ab')  # a kill mid-write
    other = ("Which organ is shown?", _CHOICES, "maybe the middle one")
    again = Judge("always-b", ClientOptions(base_url=always_b.base_url))
    assert [v.cached for v in again.decide([_ITEM, other])] == [True, False]
    assert not list(path.parent.glob("*.corrupt-*")) and "WARNING" not in caplog.text
    third = Judge("always-b", ClientOptions(base_url=always_b.base_url))
    assert [v.cached for v in third.decide([_ITEM, other])] == [True, True] and not caplog.records
