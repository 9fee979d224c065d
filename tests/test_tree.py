"""The lexical tree, select() and ``gmai-hf tree``, on generated data; never decoding an image."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest

from gmai_hf import cli, schema
from gmai_hf.testing.data import make_rows
from gmai_hf.tree import NONE_LABEL, build_tree, select

N = 400


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return make_rows(N, seed=11, image_size=2, distinct_images=1, reference_every=0)


@pytest.fixture(scope="module")
def ds(rows: list[dict]) -> datasets.Dataset:
    """The rows with an ``image`` column that cannot be decoded: any decode would raise."""
    records = [{**row, "image": {"bytes": b"not an image", "path": None}} for row in rows]
    features = datasets.Features(
        {
            **{name: datasets.Value("string") for name in schema.FEATURE_NAMES},
            "index": datasets.Value("int64"),
            "image": datasets.Image(),
        }
    )
    return datasets.Dataset.from_list(records, features=features)


def _label(value: str | None) -> str:
    return NONE_LABEL if value is None else value


def _metadata(subset: datasets.Dataset) -> list[dict]:
    return subset.select_columns(
        ["index", "question", *schema.OPTION_LETTERS, *schema.TREE_COLUMNS]
    ).to_list()


def test_image_column_would_fail_to_decode(ds: datasets.Dataset) -> None:
    with pytest.raises(Exception, match="cannot identify image"):
        ds[0]["image"]  # proves the fixture is a trap


@pytest.mark.parametrize("view", schema.TREE_VIEWS)
def test_build_tree_counts(ds: datasets.Dataset, rows: list[dict], view: str) -> None:
    tree = build_tree(ds, view)
    leaves = Counter((_label(r[view]), r["modality"], r["category"]) for r in rows)
    assert sum(node["total"] for node in tree.values()) == N
    seen = Counter()
    for value, node in tree.items():
        assert node["total"] == sum(child["total"] for child in node["children"].values())
        for modality, child in node["children"].items():
            assert child["total"] == sum(leaf["total"] for leaf in child["children"].values())
            for category, leaf in child["children"].items():
                assert "children" not in leaf
                seen[(value, modality, category)] = leaf["total"]
    assert seen == leaves
    assert list(tree) == sorted(tree)


def test_none_department_is_a_node(ds: datasets.Dataset, rows: list[dict]) -> None:
    missing = sum(r["department"] is None for r in rows)
    assert missing > 0
    assert build_tree(ds, "department")[NONE_LABEL]["total"] == missing
    chosen = select(ds, department=NONE_LABEL)
    assert len(chosen) == missing
    assert {r["department"] for r in _metadata(chosen)} == {None}


def test_select_values_lists_and_combinations(ds: datasets.Dataset, rows: list[dict]) -> None:
    tasks = ["Bone", "Counting"]
    chosen = select(ds, clinical_vqa_task=tasks, perceptual_granularity="Mask level")
    expected = [
        r["index"]
        for r in rows
        if r["clinical_vqa_task"] in tasks and r["perceptual_granularity"] == "Mask level"
    ]
    assert expected
    assert [r["index"] for r in _metadata(chosen)] == expected
    one = rows[7]
    chosen = select(
        ds, modality=one["modality"], category=one["category"], department=_label(one["department"])
    )
    assert one["index"] in [r["index"] for r in _metadata(chosen)]
    assert all(r["category"] == one["category"] for r in _metadata(chosen))


def test_select_keywords_case_insensitive_in_question_and_options(
    ds: datasets.Dataset, rows: list[dict]
) -> None:
    def has(row: dict, word: str) -> bool:
        texts = [row["question"], *(row[letter] for letter in schema.OPTION_LETTERS)]
        return any(word.lower() in t.lower() for t in texts if t)

    expected = [r["index"] for r in rows if has(r, "liver") or has(r, "highlighted")]
    chosen = select(ds, keywords=["LIVER", "Highlighted"])
    assert [r["index"] for r in _metadata(chosen)] == expected
    in_options_only = [r["index"] for r in rows if has(r, "femur")]
    assert [r["index"] for r in _metadata(select(ds, keywords="Femur"))] == in_options_only


def test_select_respects_an_earlier_selection(ds: datasets.Dataset) -> None:
    shuffled = ds.shuffle(seed=0).select(range(100))
    chosen = select(shuffled, perceptual_granularity="Box level")
    expected = [r["index"] for r in _metadata(shuffled) if r["perceptual_granularity"] == "Box level"]
    assert [r["index"] for r in _metadata(chosen)] == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(department="Dermatolgy"),
            r"no question has department 'Dermatolgy'; closest existing: 'Dermatology'",
        ),
        (dict(modality=["CT", "xray"]), r"modality 'xray'; closest existing: 'X-ray'"),
        (dict(perceptual_granularity="Pixel level"), r"closest existing: .*'Box level'"),
        (
            dict(keywords="lvier"),
            r"no question or option contains the keyword 'lvier'; closest words: 'liver'",
        ),
        (dict(category=[]), r"category must be a string or a non-empty list"),
    ],
)
def test_unknown_values_name_the_closest(ds: datasets.Dataset, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select(ds, **kwargs)


def test_no_filter_is_the_whole_dataset(ds: datasets.Dataset) -> None:
    assert len(select(ds)) == N and len(select(ds, modality=None, keywords=None)) == N


def test_a_keyword_found_nowhere_names_close_words_not_column_values(ds: datasets.Dataset) -> None:
    with pytest.raises(ValueError, match=r"keyword 'livr'; closest words: 'liver'"):
        select(ds, keywords="livr")
    with pytest.raises(ValueError, match=r"keyword 'zzzz'; no word is close to it"):
        select(ds, keywords="zzzz")


def test_a_value_of_the_wrong_type_is_a_clear_error(ds: datasets.Dataset) -> None:
    with pytest.raises(ValueError, match=r"department must be a string or a non-empty list of strings"):
        select(ds, department=5)


def test_unknown_view_and_missing_columns(ds: datasets.Dataset) -> None:
    with pytest.raises(ValueError, match="unknown view 'organ'"):
        build_tree(ds, "organ")
    with pytest.raises(ValueError, match="the dataset has no column 'modality'"):
        build_tree(ds.remove_columns("modality"))


@pytest.fixture(scope="module")
def loaded(data_dir: Path) -> datasets.Dataset:
    import gmai_hf  # noqa: F401  (registers the builder)

    return datasets.load_dataset("gmai_mmbench", data_dir=str(data_dir), split="validation")


def test_cli_draws_the_tree(data_dir: Path, loaded: datasets.Dataset, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["tree", "--data-dir", str(data_dir), "--view", "department"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"GMAI-MMBench validation: {len(loaded)} questions by department"
    tree = build_tree(loaded, "department")
    tops = [line for line in out if line[:4] in ("├── ", "└── ")]
    assert tops == [
        f"{'└── ' if i == len(tree) - 1 else '├── '}{name} ({node['total']})"
        for i, (name, node) in enumerate(tree.items())
    ]
    leaves = sum(len(m["children"]) for node in tree.values() for m in node["children"].values())
    assert len(out) == 1 + len(tree) + sum(len(node["children"]) for node in tree.values()) + leaves
    assert any(line.startswith("│   ├── ") or line.startswith("    ├── ") for line in out)


def test_cli_json_and_depth(data_dir: Path, loaded: datasets.Dataset, capsys: pytest.CaptureFixture) -> None:
    argv = ["tree", "--data-dir", str(data_dir), "--view", "perceptual_granularity", "--depth", "1", "--json"]
    assert cli.main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    expected = {k: {"total": v["total"]} for k, v in build_tree(loaded, "perceptual_granularity").items()}
    assert document == {
        "split": "validation",
        "view": "perceptual_granularity",
        "total": len(loaded),
        "children": expected,
    }
    assert cli.main(["tree", "--data-dir", str(data_dir), "--depth", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(not line.startswith(("│   │", "│       ", "    │", "        ")) for line in lines)


def test_cli_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["tree", "--data-dir", str(tmp_path)]) == 2
    assert "cannot load the validation split" in capsys.readouterr().err
