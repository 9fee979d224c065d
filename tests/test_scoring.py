"""The metric core: numbers equal a plain pandas groupby of VLMEvalKit's own hits; inputs validated."""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest
from test_matching import corpus, vlmevalkit_hits

from gmai_hf import schema, scoring
from gmai_hf.tree import NONE_LABEL


@pytest.fixture(scope="module")
def scored() -> tuple[dict, pd.DataFrame]:
    predictions, rows = corpus(n_rows=60, seed=3)
    df = pd.DataFrame(rows)
    df["hit"] = vlmevalkit_hits(["" if p is None else p for p in predictions], rows)
    df["department"] = df["department"].fillna(NONE_LABEL)
    result = scoring.compute(
        predictions,
        list(df["answer"]),
        options=[[row[letter] for letter in schema.OPTION_LETTERS] for row in rows],
        **{dim: [row[dim] for row in rows] for dim in schema.BREAKDOWN_DIMENSIONS},
    )
    return result, df


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-12)


def test_overall_equals_vlmevalkit(scored: tuple[dict, pd.DataFrame]) -> None:
    result, df = scored
    assert result["total"] == len(df)
    assert result["correct"] == df["hit"].sum()
    assert _close(result["accuracy"], df["hit"].mean())
    assert 0 < result["unmatched"] < result["total"] - result["correct"]


@pytest.mark.parametrize("dim", schema.BREAKDOWN_DIMENSIONS)
def test_by_dimension_equals_groupby(scored: tuple[dict, pd.DataFrame], dim: str) -> None:
    result, df = scored
    expected = df.groupby(dim)["hit"].agg(["sum", "count", "mean"])
    by = result["by"][dim]
    assert list(by) == sorted(expected.index)
    for value, row in expected.iterrows():
        assert by[value]["correct"] == row["sum"]
        assert by[value]["total"] == row["count"]
        assert _close(by[value]["accuracy"], row["mean"])
        low, high = by[value]["ci95"]
        assert 0 <= low <= by[value]["accuracy"] <= high <= 1


@pytest.mark.parametrize("view", schema.TREE_VIEWS)
def test_tree_equals_groupby(scored: tuple[dict, pd.DataFrame], view: str) -> None:
    result, df = scored
    tree = result["tree"][view]
    for keys, row in df.groupby([view, "modality", "category"])["hit"].agg(["sum", "count"]).iterrows():
        leaf = tree[keys[0]]["children"][keys[1]]["children"][keys[2]]
        assert (leaf["correct"], leaf["total"]) == (row["sum"], row["count"])
        assert "children" not in leaf
    for keys, row in df.groupby([view, "modality"])["hit"].agg(["sum", "count", "mean"]).iterrows():
        node = tree[keys[0]]["children"][keys[1]]
        assert (node["correct"], node["total"]) == (row["sum"], row["count"])
        assert _close(node["accuracy"], row["mean"])
    top = df.groupby(view)["hit"].agg(["sum", "count"])
    assert {k: (v["correct"], v["total"]) for k, v in tree.items()} == {
        k: (r["sum"], r["count"]) for k, r in top.iterrows()
    }


def test_none_department_is_grouped_as_none_label() -> None:
    result = scoring.compute(["A", "B", "A"], ["A", "A", "A"], department=[None, "Urology", ""])
    assert result["by"]["department"][NONE_LABEL] == {
        "accuracy": 1.0,
        "correct": 2,
        "total": 2,
        "ci95": scoring.wilson_interval(2, 2),
    }


def test_breakdowns_only_for_what_is_given() -> None:
    letters = dict(predictions=["A", "B"], references=["A", "A"])
    assert scoring.compute(**letters)["by"] == {}
    assert scoring.compute(**letters)["tree"] == {}
    tasks = ["Bone", "Muscle"]
    assert list(scoring.compute(**letters, clinical_vqa_task=tasks)["by"]) == ["clinical_vqa_task"]
    assert scoring.compute(**letters, clinical_vqa_task=tasks, modality=["CT", "CT"])["tree"] == {}
    with_tree = scoring.compute(
        **letters, clinical_vqa_task=tasks, modality=["CT", "CT"], category=["x", "y"]
    )
    assert list(with_tree["tree"]) == ["clinical_vqa_task"]
    assert (
        with_tree["tree"]["clinical_vqa_task"]["Bone"]["children"]["CT"]["children"]["x"]["accuracy"] == 1.0
    )


def test_refusals_and_no_match_count_as_unmatched_and_wrong() -> None:
    result = scoring.compute(
        ["Cannot determine the answer", "Z", "no idea", "It is MRI", "(B)"],
        ["A", "A", "A", "B", "B"],
        options=[["CT", "MRI"]] * 5,
    )
    assert (result["correct"], result["total"], result["unmatched"]) == (2, 5, 3)


def test_strict_matching() -> None:
    args = (["The answer is a lesion", "A"], ["A", "A"])
    assert scoring.compute(*args, options=[["CT", "MRI"]] * 2)["correct"] == 2
    assert scoring.compute(*args, options=[["CT", "MRI"]] * 2, matching="strict")["correct"] == 1


def test_without_references_only_counts() -> None:
    result = scoring.compute(["A", "maybe"], None)
    assert result == {
        "accuracy": None,
        "correct": None,
        "total": 2,
        "unmatched": 1,
        "chance": None,
        "judge": None,
        "by": None,
        "tree": None,
    }


def test_chance_is_the_exact_expected_accuracy_of_a_uniform_guess() -> None:
    options = [["CT", "MRI"], ["a", "b", "c", "d"], ["x", "y", None, "z"], ["m", "f"]]
    result = scoring.compute(
        ["A", "B", "C", "A"],
        ["A", "A", "C", "B"],
        options=options,
        department=["D1", "D1", "D2", "D2"],
        modality=["CT", "CT", "MRI", "CT"],
        category=["c1", "c2", "c3", "c1"],
        clinical_vqa_task=["T", "T", "T", "T"],
    )
    # the third answer, C, is not shown (its option is None): no guess among A, B, D can hit it
    assert result["chance"] == pytest.approx((1 / 2 + 1 / 4 + 0 + 1 / 2) / 4)
    assert result["by"]["department"]["D1"]["chance"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert result["by"]["department"]["D2"]["chance"] == pytest.approx((0 + 1 / 2) / 2)
    ct = result["tree"]["clinical_vqa_task"]["T"]["children"]["CT"]
    assert ct["chance"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 2) / 3) and ct["total"] == 3
    assert result["tree"]["clinical_vqa_task"]["T"]["children"]["MRI"]["chance"] == 0
    assert scoring.compute(["A"], ["A"])["chance"] is None  # options unknown: no chance level
    # without answers (test) chance is over the options shown
    assert scoring.compute(["A", "B"], None, options=options[:2])["chance"] == pytest.approx(
        (1 / 2 + 1 / 4) / 2
    )


def test_chance_on_the_sample_counts_answers_the_protocol_hides_as_zero() -> None:
    """Issue 17: 15 sample answers are cells pandas reads as missing ("None"): 32.1% was reported."""
    from gmai_hf import SAMPLE_DIR, protocols
    from gmai_hf.commands.score import load_questions

    raw = load_questions(SAMPLE_DIR, "validation")
    expected = {}
    for protocol in protocols.PROTOCOLS:
        rows = [protocols.present_row(row, protocol) for row in raw]
        options = [[row[letter] for letter in schema.OPTION_LETTERS] for row in rows]
        answers = [row["answer"] for row in rows]
        result = scoring.compute(answers, answers, options=options)
        # by hand: a uniform guess among the options shown hits the answer only if it is shown
        shown = [
            {letter for letter in schema.OPTION_LETTERS if row[letter] not in (None, "")} for row in rows
        ]
        by_hand = sum(1 / len(s) if a in s else 0 for s, a in zip(shown, answers, strict=True)) / len(rows)
        assert result["chance"] == pytest.approx(by_hand)
        expected[protocol] = result["chance"]
    assert round(100 * expected["vlmevalkit"], 1) == 28.9
    assert expected["lossless"] > expected["vlmevalkit"]


def test_wilson_interval_known_values() -> None:
    low, high = scoring.wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    low, high = scoring.wilson_interval(0, 10)
    assert low == 0 and round(high, 4) == 0.2775
    assert scoring.wilson_interval(10, 10)[1] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(predictions=["A", "B"], references=["A"]), r"references has 1 items but predictions has 2"),
        (dict(predictions=["A"], references=["A"], department=["x", "y"]), r"department has 2 items"),
        (dict(predictions=["A", "B"], references=["A", None]), r"references\[1\] is None"),
        (dict(predictions=["A"], references=["F"]), r"references\[0\] is 'F', not an option letter"),
        (dict(predictions=["A"], references=["a"]), r"references\[0\] is 'a'"),
        (dict(predictions=[], references=[]), r"nothing to score"),
        (dict(predictions=["A"], references=["A"], matching="fuzzy"), r"unknown matching 'fuzzy'"),
    ],
)
def test_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scoring.compute(**kwargs)


def test_an_answer_naming_an_absent_option_is_scored_wrong_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The builder keeps such rows (a content oddity of the files): scoring must not fail on them."""
    with caplog.at_level(logging.WARNING, logger="gmai_hf.scoring"):
        result = scoring.compute(["C", "A"], ["C", "A"], options=[["x", "y"], ["x", "y"]])
    assert (result["correct"], result["total"]) == (1, 2)  # "C" is no option of question 0
    assert "1 answer(s) name an option the question does not have" in caplog.text
    assert "references[0] is 'C', options A, B" in caplog.text


def test_an_answer_the_protocol_hid_is_said_once_not_warned(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 18: every command on the sample warned of a mismatch that is the protocol at work."""
    options = [["x", None, "z"], ["x", "y"], ["x", "y"]]
    with caplog.at_level(logging.INFO, logger="gmai_hf.scoring"):
        result = scoring.compute(["A", "A", "C"], ["B", "A", "C"], options=options, hidden=[("B",), (), ()])
    assert (result["correct"], result["chance"]) == (1, pytest.approx((0 + 1 / 2 + 0) / 3))
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(infos) == 1 and infos[0].startswith("1 answer(s) are an option the protocol did not show")
    assert "--protocol vlmevalkit" in infos[0]
    # references[2] is C, and question 2 has only A and B: still a warning, for that one only
    assert len(warnings) == 1 and "1 answer(s) name an option the question does not have" in warnings[0]
    assert "references[2] is 'C'" in warnings[0]
