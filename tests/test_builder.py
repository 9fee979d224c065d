"""The ``gmai_mmbench`` builder: features, both splits, quoting, references, sharding, errors, cache."""

from __future__ import annotations

import base64
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml

import gmai_hf
from gmai_hf import builder, schema
from gmai_hf.testing.data import (
    ARROW_SCHEMA,
    benchmark_rows,
    dataset_rows,
    encode_image,
    file_rows,
    iter_rows,
    make_image,
    make_rows,
    stored_rows,
    write_benchmark,
    write_tsv,
)

REPO = Path(__file__).resolve().parents[1]


def load(data_dir: Path | str, split: str, **kwargs: Any) -> datasets.Dataset:
    return datasets.load_dataset("gmai_mmbench", data_dir=str(data_dir), split=split, **kwargs)


def png(seed: int = 0) -> str:
    import random

    return encode_image(make_image(random.Random(seed), 8))


def row(index: int, **overrides: Any) -> dict[str, Any]:
    """One valid question, fields overridable."""
    return {
        "index": index,
        "question": f"question {index}?",
        "A": "liver",
        "B": "kidney",
        "C": None,
        "D": None,
        "E": None,
        "answer": "A",
        "image": png(index),
        "category": "liver",
        "clinical_vqa_task": "Organ Recognition - Abdomen",
        "department": "General Surgery",
        "perceptual_granularity": "Image level",
        "modality": "CT",
        "original_task": "synthetic",
        **overrides,
    }


def val_dir(tmp_path: Path, rows: list[dict[str, Any]], **kwargs: Any) -> Path:
    write_tsv(tmp_path / schema.VAL_FILENAME, rows, **kwargs)
    return tmp_path


# --- Features and content ---------------------------------------------------------------------


@pytest.mark.parametrize("split", schema.SPLITS)
def test_features_in_contract_order(data_dir: Path, split: str) -> None:
    ds = load(data_dir, split)
    assert tuple(ds.features) == schema.FEATURE_NAMES
    assert ds.features["index"] == datasets.Value("int64")
    assert isinstance(ds.features["image"], datasets.Image)
    for name in schema.FEATURE_NAMES:
        if name not in ("index", "image"):
            assert ds.features[name] == datasets.Value("string"), name
    assert ds.data.schema.remove_metadata() == ARROW_SCHEMA  # also checked under datasets 3.x


def test_every_column_matches_the_files(data_dir: Path) -> None:
    """The same ground truth as tests_datasets3/ (the loading script under datasets 3.x)."""
    truth = benchmark_rows(n_val=40, per_part=6, seed=0)  # conftest's data_dir
    assert stored_rows(load(data_dir, "validation")) == truth["validation"]
    got = stored_rows(load(data_dir, "test"))
    assert got == truth["test"]
    assert [r["index"] for r in got] == list(range(66))  # global indices, parts in order
    assert all(r["answer"] is None for r in got)


@pytest.mark.parametrize("split", schema.SPLITS)
def test_sample_rows_equal_the_reader(split: str) -> None:
    """The bundled sample through datasets equals the reader's rows (also checked under datasets 3.x)."""
    assert stored_rows(load(gmai_hf.SAMPLE_DIR, split)) == file_rows(gmai_hf.SAMPLE_DIR, split)


def test_images_decode_lazily_to_pil(data_dir: Path) -> None:
    ds = load(data_dir, "validation")
    modes = {ds[i]["image"].mode for i in range(8)}
    assert {"RGB", "L", "RGBA"} <= modes  # PNG in three modes (and one JPEG among the 8)


def test_sample_dir_is_a_valid_data_dir() -> None:
    val = load(gmai_hf.SAMPLE_DIR, "validation")
    test = load(gmai_hf.SAMPLE_DIR, "test")
    assert (len(val), len(test)) == (200, 110)
    assert all(answer in schema.OPTION_LETTERS for answer in val["answer"])
    assert val[0]["image"].size == (64, 64)


def test_quoting_and_missing_values(tmp_path: Path) -> None:
    rows = [
        row(
            0, question='Tab\there, "quotes", and\na newline', A='say ""hi""', B="None", C="NA", D="", E=None
        ),
        row(1, question="\tleading tab", A='"', B="null", category="nan", department=None),
    ]
    got = stored_rows(load(val_dir(tmp_path, rows), "validation"))
    assert got[0]["question"] == 'Tab\there, "quotes", and\na newline'
    assert (got[0]["A"], got[0]["B"], got[0]["C"], got[0]["D"], got[0]["E"]) == (
        'say ""hi""',
        "None",
        "NA",
        None,
        None,
    )
    assert (got[1]["question"], got[1]["A"], got[1]["B"]) == ("\tleading tab", '"', "null")
    assert (got[1]["category"], got[1]["department"]) == ("nan", None)


def test_vlmevalkit_lowercase_header_in_any_order(tmp_path: Path) -> None:
    rows = make_rows(10, seed=3)
    header = [schema.VLMEVALKIT_NAME[f] for f in reversed(schema.FEATURE_NAMES)]
    assert "clinical vqa task" in header
    # write_tsv looks columns up by feature name, except names it does not know (the lower-cased one).
    renamed = [{**r, "clinical vqa task": r["clinical_vqa_task"]} for r in rows]
    got = stored_rows(load(val_dir(tmp_path, renamed, header=header), "validation"))
    assert got == dataset_rows(rows)


def test_extra_columns_are_ignored(tmp_path: Path) -> None:
    rows = [{**row(0), "hint": "x"}]
    header = [*schema.OFFICIAL_TEST_HEADER, "answer", "hint"]
    with_hint = [{**r, "hint": "ignored"} for r in rows]
    (tmp_path / schema.VAL_FILENAME).write_text("")
    write_tsv(tmp_path / schema.VAL_FILENAME, with_hint, header=header)
    assert stored_rows(load(tmp_path, "validation"))[0]["question"] == "question 0?"


def test_an_option_column_beyond_e_is_a_warning_not_dropped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """VLMEvalKit would show an ``F`` column as option F: ignoring it unsaid would change the question."""
    header = [*schema.OFFICIAL_TEST_HEADER, "answer", "F"]
    rows = [{**row(0, E="lung"), "F": "heart"}, {**row(1), "F": None}]
    data = val_dir(tmp_path, rows, header=header)
    with caplog.at_level(logging.WARNING, logger="gmai_hf.builder"):
        got = stored_rows(load(data, "validation"))
    assert [r["E"] for r in got] == ["lung", None] and "F" not in got[0]
    (warning,) = [r.getMessage() for r in caplog.records if "beyond E" in r.getMessage()]
    assert str(data / schema.VAL_FILENAME) in warning and "column(s) F look like options beyond E" in warning
    assert schema.options_beyond(["index", "A", "E", "F", "Z", "answer", "FF", "f"]) == ["F", "Z"]


# --- Image references ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_proc", [1, 2])
def test_image_references_backward_forward_chained_across_ranges(tmp_path: Path, num_proc: int) -> None:
    rows = [
        row(10),
        row(11, image="10"),  # backward
        row(12, image="14"),  # forward
        row(13, image="11"),  # chain 13 -> 11 -> 10
        row(14),
        row(15, image=" 12 "),  # chain through a forward reference
    ]
    data = val_dir(tmp_path, rows)
    # One byte range per row or two: references must cross ranges and processes.
    got = stored_rows(load(data, "validation", range_bytes=64, num_proc=num_proc))
    img10, img14 = base64.b64decode(rows[0]["image"]), base64.b64decode(rows[4]["image"])
    assert [r["image"] for r in got] == [img10, img10, img14, img10, img14, img14]


# --- Splits and files ---------------------------------------------------------------------------


def test_renamed_test_parts_and_missing_parts_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_benchmark(tmp_path, n_val=0, test_parts=(1, 2, 5), per_part=4, renamed_test=True)
    with caplog.at_level(logging.WARNING, logger="gmai_hf.builder"):
        ds = load(tmp_path, "test")
    assert ds["index"] == [*range(0, 8), *range(16, 20)]
    assert "test parts [3, 4, 6, 7, 8, 9, 10, 11] of 11 are missing" in caplog.text
    assert caplog.text.count("are missing") == 1  # said once, not once per cache fingerprint


def test_split_without_file_lists_what_was_looked_for(tmp_path: Path) -> None:
    write_benchmark(tmp_path, n_val=5, test_parts=())
    assert len(load(tmp_path, "validation")) == 5
    with pytest.raises(FileNotFoundError, match=r"no test file in .*GMAI_mm_bench_TEST_part_1\.tsv"):
        load(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match=r"no test file .*GMAI-MMBench_TEST_part_11\.tsv"):
        load(tmp_path, "test", streaming=True)


def test_empty_data_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no validation file in .*GMAI-MMBench_VAL\.tsv"):
        load(tmp_path, "validation")


def test_split_configurations(tmp_path: Path) -> None:
    write_benchmark(tmp_path, n_val=5, test_parts=(1,), per_part=3)
    assert (
        len(datasets.load_dataset("gmai_mmbench", "validation", data_dir=str(tmp_path), split="validation"))
        == 5
    )
    with pytest.raises(ValueError, match="'validation' configuration holds only"):
        datasets.load_dataset("gmai_mmbench", "validation", data_dir=str(tmp_path), split="test")


# --- num_proc and streaming ---------------------------------------------------------------------


def test_num_proc_two_gives_the_same_rows_as_one(tmp_path: Path) -> None:
    """One file cut into byte ranges; the generated questions hold quoted tabs and newlines."""
    rows = make_rows(60, seed=5)
    assert any("\n" in r["question"] for r in rows) and any('"' in r["question"] for r in rows)
    data = val_dir(tmp_path, rows)
    one = stored_rows(load(data, "validation", cache_dir=str(tmp_path / "c1")))
    two = stored_rows(load(data, "validation", cache_dir=str(tmp_path / "c2"), num_proc=2, range_bytes=2048))
    assert one == two == dataset_rows(rows)


def test_streaming_yields_the_same_rows(data_dir: Path) -> None:
    for split in schema.SPLITS:
        prepared = stored_rows(load(data_dir, split))
        streamed = load(data_dir, split, streaming=True).cast_column("image", datasets.Image(decode=False))
        assert [{**r, "image": r["image"]["bytes"]} for r in streamed] == prepared


# --- Bad input ----------------------------------------------------------------------------------


def _not_png() -> str:
    return base64.b64encode(b"definitely not an image " * 4).decode()


def _cut_png() -> str:
    return base64.b64encode(base64.b64decode(png(7))[:-20]).decode()


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (row(3, image="!!!!" * 30), r"question index 3: the image field is not valid base64"),
        (row(3, image=_not_png()), r"question index 3: .* not an image"),
        (row(3, image=_cut_png()), r"question index 3: the PNG image is cut short"),
        (row(3, image="999"), r"question index 3: its image refers to index 999, which is not in this file"),
        (row(3, image="abc"), r"question index 3: the image field 'abc' .* not the index of another row"),
        (row(3, image="3"), r"question index 3: image references loop"),
        (row(1), r"duplicate index 1: .*line 3 .* and .*line 5"),
        (row(3, question=b"\xff".decode("latin-1")), None),  # valid: written as UTF-8 text
    ],
    ids=["base64", "not-image", "cut-png", "unresolvable", "bad-reference", "loop", "duplicate", "latin"],
)
def test_bad_rows_name_file_and_question(
    tmp_path: Path, bad_row: dict[str, Any], message: str | None
) -> None:
    data = val_dir(tmp_path, [row(0), row(1), row(2), bad_row])
    if message is None:
        assert len(load(data, "validation")) == 4
        return
    with pytest.raises(builder.GmaiMMBenchError, match=message) as error:
        load(data, "validation")
    assert schema.VAL_FILENAME in str(error.value)


def test_missing_required_column(tmp_path: Path) -> None:
    header = [name for name in schema.OFFICIAL_TEST_HEADER if name != "modality"]
    data = val_dir(tmp_path, [row(0)], header=header)
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"GMAI-MMBench_VAL\.tsv: missing required column\(s\) \['modality'\]"
    ):
        load(data, "validation")


def test_wrong_field_count(tmp_path: Path) -> None:
    path = val_dir(tmp_path, [row(0), row(1)]) / schema.VAL_FILENAME
    lines = path.read_bytes().split(b"\n")
    lines[2] += b"\textra"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(
        builder.GmaiMMBenchError,
        match=r"VAL\.tsv: question index 1, line 3 .* has 16 fields, the header has 15",
    ):
        load(tmp_path, "validation")


def test_truncated_file(tmp_path: Path) -> None:
    path = val_dir(tmp_path, [row(0), row(1), row(2)]) / schema.VAL_FILENAME
    path.write_bytes(path.read_bytes()[:-150])
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"VAL\.tsv: the file is truncated: the last row \(question index 2"
    ):
        load(tmp_path, "validation")


def test_duplicate_index_across_test_parts(tmp_path: Path) -> None:
    write_tsv(tmp_path / schema.test_filename(1), [row(0, answer=None), row(1, answer=None)])
    write_tsv(tmp_path / schema.test_filename(2), [row(2, answer=None), row(1, answer=None)])
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"duplicate index 1: .*part_1\.tsv line 3.*part_2\.tsv line 3"
    ):
        load(tmp_path, "test")


def test_duplicate_index_across_processes(tmp_path: Path) -> None:
    rows = [row(i) for i in range(20)] + [row(3)]
    data = val_dir(tmp_path, rows)
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"duplicate index 3 in the validation split .*line 5 .* and .*line 22"
    ):
        load(data, "validation", num_proc=2)


def test_answer_naming_an_empty_option_warns_and_keeps_the_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = val_dir(tmp_path, [row(0), row(1, answer="D")])
    with caplog.at_level(logging.WARNING, logger="gmai_hf.builder"):
        ds = load(data, "validation")
    assert ds["answer"] == ["A", "D"]
    assert "question index 1: answer 'D' names an empty option" in caplog.text
    assert schema.VAL_FILENAME in caplog.text


def test_answer_that_is_not_a_letter_is_an_error(tmp_path: Path) -> None:
    data = val_dir(tmp_path, [row(0), row(1, answer="F")])
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"question index 1: answer 'F' is not an option letter"
    ):
        load(data, "validation")


def test_header_only_file_is_an_error(tmp_path: Path) -> None:
    data = val_dir(tmp_path, [])
    with pytest.raises(builder.GmaiMMBenchError, match=r"VAL\.tsv: the file has a header but no questions"):
        load(data, "validation")


def test_a_bad_test_part_says_how_to_load_validation_alone(tmp_path: Path) -> None:
    data = val_dir(tmp_path, [row(0)])
    write_tsv(tmp_path / schema.test_filename(1), [row(1, answer=None), row(1, answer=None)])
    with pytest.raises(builder.GmaiMMBenchError, match=r"(?s)duplicate index 1.*gmai_hf\.load_split"):
        load(data, "validation")  # configuration "all" prepares the test split too
    assert builder.load_split("validation", data)["index"] == [0]


# --- Cache ------------------------------------------------------------------------------------


def test_failed_preparation_leaves_no_cache(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    data = val_dir(tmp_path / "data", [row(0), row(1, image="!!!!" * 30)])
    cache = str(tmp_path / "cache")
    # A fixed signature keeps the cache key the same across the fix, so only a complete cache could be reused.
    with pytest.raises(builder.GmaiMMBenchError):
        load(data, "validation", cache_dir=cache, signature="fixed")
    val_dir(data, [row(0), row(1), row(2)])
    assert load(data, "validation", cache_dir=cache, signature="fixed")["index"] == [0, 1, 2]


def test_regenerated_files_are_not_served_from_a_stale_cache(tmp_path: Path) -> None:
    write_benchmark(tmp_path, n_val=5, test_parts=(), seed=1)
    assert len(load(tmp_path, "validation")) == 5
    write_benchmark(tmp_path, n_val=7, test_parts=(), seed=2)
    assert stored_rows(load(tmp_path, "validation")) == dataset_rows(make_rows(7, seed=2))


def test_same_files_reuse_the_cache(tmp_path: Path) -> None:
    write_benchmark(tmp_path, n_val=5, test_parts=())
    first = load(tmp_path, "validation")
    second = load(tmp_path, "validation")
    assert first.cache_files == second.cache_files


# --- Registration, loading script, card -------------------------------------------------------


def test_register_is_idempotent() -> None:
    from datasets import load as datasets_load

    wrapper = datasets_load.dataset_module_factory
    builder.register()
    builder.register()
    assert datasets_load.dataset_module_factory is wrapper
    assert not getattr(wrapper.__wrapped__, "_gmai_hf", False)


def test_loading_script_delegates_to_the_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = REPO / "loading_script" / "gmai_mmbench" / "gmai_mmbench.py"
    spec = importlib.util.spec_from_file_location("gmai_mmbench_script", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # datasets re-imports the builder's module by name
    spec.loader.exec_module(module)
    assert issubclass(module.GmaiMmbench, builder.GmaiMMBench)
    instance = module.GmaiMmbench(
        config_name="validation", data_dir=str(gmai_hf.SAMPLE_DIR), cache_dir=str(tmp_path)
    )
    instance.download_and_prepare()
    ds = instance.as_dataset(split="validation")
    assert len(ds) == 200 and tuple(ds.features) == schema.FEATURE_NAMES
    assert "chen2024gmaimmbench" in instance.info.citation


def test_dataset_card_matches_the_features() -> None:
    text = (REPO / "loading_script" / "gmai_mmbench" / "README.md").read_text()
    card = yaml.safe_load(text.split("---")[1])
    assert card["license"] == "apache-2.0"
    assert [f["name"] for f in card["dataset_info"]["features"]] == list(schema.FEATURE_NAMES)
    assert [s["name"] for s in card["dataset_info"]["splits"]] == list(schema.SPLITS)
    assert "@misc{chen2024gmaimmbench" in text


def test_iter_rows_without_images_reads_metadata_only(data_dir: Path) -> None:
    rows = list(builder.iter_rows(data_dir / schema.VAL_FILENAME, images=False))
    assert len(rows) == 40 and all(r["image"] is None for r in rows)
    assert [r["category"] for r in rows] == [r["category"] for r in iter_rows(40, seed=0)]


# --- Errors that must keep their message (issue 8) -------------------------------------------------


def test_an_index_beyond_int64_is_named(tmp_path: Path) -> None:
    data = val_dir(tmp_path, [row(0), row(2**63)])
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"VAL\.tsv: line 3 .*index 9223372036854775808 does not fit"
    ):
        load(data, "validation")


def test_a_header_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = val_dir(tmp_path, [row(0)]) / schema.VAL_FILENAME
    path.write_bytes(b"ind\xffex" + path.read_bytes()[5:])
    with pytest.raises(builder.GmaiMMBenchError, match=r"VAL\.tsv: line 1: the header is not UTF-8 text"):
        load(tmp_path, "validation")


def test_a_bad_row_met_while_resolving_an_image_reference_is_named(tmp_path: Path) -> None:
    path = val_dir(tmp_path, [row(0), row(1, image="2"), row(2), row(3)]) / schema.VAL_FILENAME
    lines = path.read_bytes().split(b"\n")
    lines[4] += b"\textra"  # question 3 has a field too many; the scan for question 2 meets it first
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(
        builder.GmaiMMBenchError,
        match=r"question index 3, line 5 .* has 16 fields.*while looking for the row whose image "
        r"question index 1",
    ):
        load(tmp_path, "validation")


def test_an_empty_answer_cell_fails_at_load_time(tmp_path: Path) -> None:
    rows = [row(0), row(1)]
    rows[1]["answer"] = None
    with pytest.raises(
        builder.GmaiMMBenchError, match=r"VAL\.tsv: question index 1: the answer cell is empty"
    ):
        load(val_dir(tmp_path, rows), "validation")


def test_two_processes_on_a_truncated_file_keep_the_message(tmp_path: Path) -> None:
    data = val_dir(tmp_path, make_rows(60, seed=5))
    path = data / schema.VAL_FILENAME
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(builder.GmaiMMBenchError, match=r"VAL\.tsv: the file is truncated: the last row"):
        load(data, "validation", num_proc=2, range_bytes=2048)


# --- One cache per set of files, shared by every configuration (issue 8) -------------------------


def test_two_spellings_of_a_folder_share_one_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_benchmark(tmp_path / "data", n_val=5, test_parts=())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    spellings = ["data", str(tmp_path / "data"), "./data/", "link"]
    caches = {
        tuple(load(spelling, "validation").cache_files[0]["filename"] for _ in [0]) for spelling in spellings
    }
    assert len(caches) == 1


def test_configuration_all_reuses_a_prepared_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_benchmark(tmp_path, n_val=5, test_parts=(1, 2), per_part=3)
    validation = gmai_hf.load_split("validation", tmp_path)
    every = datasets.load_dataset("gmai_mmbench", data_dir=str(tmp_path))
    assert set(every) == {"validation", "test"}
    assert every["validation"].cache_files == validation.cache_files
    assert gmai_hf.load_split("test", tmp_path).cache_files == every["test"].cache_files
    assert stored_rows(every["validation"]) == stored_rows(validation)
    assert len(datasets.load_dataset("gmai_mmbench", data_dir=str(tmp_path), split="test")) == 6
