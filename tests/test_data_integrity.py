"""Issue 17, exports and compare: what is read back from an export, or compared between two runs,
is the data it claims to be. Edited, swapped, missing and extra shards, duplicated and negative
indices, a shard changed behind ``datasets``' cache, two exports into one folder, an export into
someone's folder, the synthetic label on an export of the sample, and two runs whose questions
share indices and answers but not their text or images."""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gmai_hf
from gmai_hf import SAMPLE_DIR, cli, download, export, fingerprints, identity, processes, runner, schema
from gmai_hf.builder import GmaiMMBenchError, load_split
from gmai_hf.runner import RunConfig
from gmai_hf.testing.data import iter_rows, make_rows, write_benchmark, write_tsv


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_benchmark(tmp_path_factory.mktemp("tsv"), n_val=12, per_part=2, seed=4, image_size=64)


@pytest.fixture(scope="module")
def made(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "gmai"
    export.export(out, data_dir=source, max_shard_size="40KB")
    return out


@pytest.fixture
def copy(made: Path, tmp_path: Path) -> Path:
    """A private copy of the export, to edit."""
    return Path(shutil.copytree(made, tmp_path / "export"))


def shards(folder: Path, split: str = "validation") -> list[Path]:
    return sorted((folder / "data").glob(f"{split}-*.parquet"))


def rewrite(shard: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """Edit a shard's rows in place, as someone with pandas or pyarrow would."""
    table = pq.read_table(shard)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)


def other_letter(row: dict[str, Any]) -> str:
    return next(letter for letter in "ABCDE" if row[letter] is not None and letter != row["answer"])


# --- structure ---------------------------------------------------------------------------------------


def _imports() -> dict[str, set[str]]:
    """gmai_hf module -> the gmai_hf modules it imports anywhere (inside functions too)."""
    root = Path(gmai_hf.__file__).parent
    names = {
        ".".join(("gmai_hf", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for path in root.rglob("*.py")
    }
    graph = {}
    for path in root.rglob("*.py"):
        name = ".".join(("gmai_hf", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {module for module in found if module in names and module != "gmai_hf"} - {name}
    return graph


def test_the_data_stages_import_one_way() -> None:
    graph = _imports()
    for module in ("gmai_hf.fingerprints", "gmai_hf.identity"):
        assert not graph.get(module, set()) & {"gmai_hf.builder", "gmai_hf.export"}, module
    stages = {f"gmai_hf.{name}" for name in ("builder", "export", "identity", "fingerprints", "download")}
    stages |= {f"gmai_hf.{name}" for name in ("tsv", "schema", "compat", "files")}

    def cycle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for imported in sorted(graph[module] & stages):
            if imported in path:
                return (*path[path.index(imported) :], imported)
            found = cycle_from(imported, (*path, imported))
            if found:
                return found
        return None

    assert [cycle_from(module, (module,)) for module in sorted(stages)] == [None] * len(stages)


# --- what an export records -----------------------------------------------------------------------


def test_the_record_holds_each_shard_sha256_and_each_split_fingerprint(made: Path, source: Path) -> None:
    entry = json.loads((made / "gmai_hf.json").read_text())["splits"]["validation"]
    assert len(entry["shards"]) > 1
    assert [shard["name"] for shard in entry["shards"]] == [f"data/{path.name}" for path in shards(made)]
    assert all(shard["sha256"] == fingerprints.sha256_file(made / shard["name"]) for shard in entry["shards"])
    from_tsv = load_split("validation", source)
    assert entry["fingerprint"] == fingerprints.split_fingerprint(fingerprints.dataset_fingerprints(from_tsv))
    row = from_tsv.cast_column("image", from_tsv.features["image"].__class__(decode=False))[0]
    base = fingerprints.question_fingerprint(row)
    edits = {"question": "another text", "A": "another option", "answer": other_letter(row), "image": b"x"}
    assert all(fingerprints.question_fingerprint({**row, key: value}) != base for key, value in edits.items())
    # intact, the export adds no problem of its own to those of the files it was made from
    problems = identity.describe("validation", source, 12)["problems"]
    assert identity.describe("validation", made, 12)["problems"] == problems


# --- edited exports ---------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", ["answer", "duplicated index", "overwritten by another shard"])
def test_an_edited_shard_is_refused_in_one_line_naming_it(
    copy: Path, edit: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = shards(copy)[:2]
    if edit == "answer":
        rewrite(first, lambda rows: rows[0].update(answer=other_letter(rows[0])))
    elif edit == "duplicated index":
        rewrite(first, lambda rows: rows[1].update(index=rows[0]["index"]))
    else:
        shutil.copyfile(second, first)
    with pytest.raises(GmaiMMBenchError, match=re.escape(f"{first}: not the shard that was exported")):
        load_split("validation", copy)
    data = identity.describe("validation", copy, 12)
    assert data["official"] is False and any(str(first) in problem for problem in data["problems"])
    assert (
        cli.main(
            ["run", "--model", "random", "--data-dir", str(copy), "--output-dir", str(copy.parent / "x")]
        )
        == 2
    )
    assert f"{first}: not the shard that was exported" in caplog.text and "Traceback" not in caplog.text


def test_an_edited_export_is_not_pushed(copy: Path) -> None:
    from test_export import FakeHub

    hub = FakeHub()
    first = shards(copy)[0]
    rewrite(first, lambda rows: rows[0].update(answer=other_letter(rows[0])))
    with pytest.raises(
        fingerprints.ExportMismatch, match=re.escape(f"{first}: not the shard that was exported")
    ):
        export.push_to_hub(copy, "me/gmai-mmbench", api=hub)
    assert hub.repos == [] and hub.commits == []


def test_a_missing_or_extra_shard_is_one_line_naming_it(
    copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    last = shards(copy)[-1]
    kept = last.rename(tmp_path / last.name)
    assert cli.main(["info", "--data-dir", str(copy)]) == 2
    assert f"{last}: missing" in caplog.text
    kept.rename(last)
    extra = copy / "data" / "validation-00009-of-00010.parquet"
    shutil.copyfile(shards(copy)[0], extra)
    caplog.clear()
    assert cli.main(["info", "--data-dir", str(copy)]) == 2
    assert f"{extra}: not one of the" in caplog.text and "Traceback" not in caplog.text
    # a Parquet folder with no record to check against: the card's sizes, said in one line too
    (copy / "gmai_hf.json").unlink()
    with pytest.raises(GmaiMMBenchError, match=r"does not hold the rows its README\.md records"):
        load_split("validation", copy)


def test_a_shard_changed_after_a_first_load_is_never_served_from_the_cache(copy: Path) -> None:
    first = shards(copy)[0]
    assert len(load_split("validation", copy)) == 12  # datasets' cache now holds the rows
    changed: dict[str, Any] = {}

    def edit(rows: list[dict[str, Any]]) -> None:
        changed.update(index=rows[0]["index"], answer=other_letter(rows[0]))
        rows[0]["answer"] = changed["answer"]

    rewrite(first, edit)
    with pytest.raises(GmaiMMBenchError, match=re.escape(f"{first}: not the shard that was exported")):
        load_split("validation", copy)
    # the change made the export's own (as a new export restored with old mtimes would): read anew
    provenance = json.loads((copy / "gmai_hf.json").read_text())
    entry = provenance["splits"]["validation"]
    entry["shards"] = fingerprints.shard_records(copy, [shard["name"] for shard in entry["shards"]])
    content: dict[int, str] = {}
    for path in shards(copy):
        content.update(fingerprints.table_fingerprints(pq.read_table(path)))
    entry["fingerprint"] = fingerprints.split_fingerprint(content)
    (copy / "gmai_hf.json").write_text(json.dumps(provenance))
    ds = load_split("validation", copy)
    assert ds.filter(lambda row: row["index"] == changed["index"])[0]["answer"] == changed["answer"]


def test_duplicate_and_negative_indices_are_refused_for_every_source(copy: Path, tmp_path: Path) -> None:
    negative = tmp_path / "negative"
    negative.mkdir()
    rows = make_rows(6, seed=1, reference_every=0)
    rows[2]["index"] = -3
    write_tsv(negative / schema.VAL_FILENAME, rows)
    with pytest.raises(GmaiMMBenchError, match="the index -3 is negative"):
        load_split("validation", negative)
    doubled = write_benchmark(tmp_path / "doubled", n_val=0, test_parts=(1, 2), per_part=3)
    write_tsv(doubled / schema.test_filename(2), iter_rows(3, start_index=1, seed=9, with_answer=False))
    with pytest.raises(GmaiMMBenchError, match="duplicate index 1"):
        load_split("test", doubled)
    # a Parquet folder not made by gmai-hf (no record to check its shards against)
    (copy / "gmai_hf.json").unlink()
    first = shards(copy)[0]
    rewrite(first, lambda rows: rows[1].update(index=rows[0]["index"]))
    with pytest.raises(GmaiMMBenchError, match="duplicate index"):
        load_split("validation", copy)
    rewrite(first, lambda rows: rows[1].update(index=-5))
    with pytest.raises(GmaiMMBenchError, match="question index -5 is negative"):
        load_split("validation", copy)


def test_an_export_is_official_only_while_it_matches_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = iter_rows(schema.VAL_QUESTIONS, seed=2, image_size=2, distinct_images=1, reference_every=0)
    path = write_tsv(data / schema.VAL_FILENAME, rows)
    monkeypatch.setattr(schema, "VAL_MD5", download.md5sum(path))  # pretend this is the release
    assert download.check_files([path], "validation") == {path: True}
    out = tmp_path / "export"
    export.export(out, data_dir=data, splits=["validation"])
    ds = load_split("validation", out)
    assert identity.describe("validation", out, len(ds))["official"] is True
    rewrite(shards(out)[0], lambda rows: rows[0].update(answer=other_letter(rows[0])))
    data_object = identity.describe("validation", out, len(ds))
    assert data_object["official"] is False
    assert any("not the shard that was exported" in problem for problem in data_object["problems"])


# --- writing an export ------------------------------------------------------------------------------


def test_a_second_export_into_the_same_folder_at_once_is_refused(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "gmai"
    move = export._move_into_place
    refused = []

    def another_export_meanwhile(work: Path, output: Path) -> None:
        argv = ["export", "--data-dir", str(source), "--output-dir", str(out), "--split", "test"]
        refused.append(cli.main(argv))
        move(work, output)

    monkeypatch.setattr(export, "_move_into_place", another_export_meanwhile)
    export.export(out, data_dir=source, splits=["validation"])
    assert refused == [2] and f"{out} is in use by another export" in caplog.text
    assert [path.name for path in (out / "data").iterdir()] == ["validation-00000-of-00001.parquet"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gmai"]  # the lock file goes with the lock
    with pytest.raises(processes.OutputLocked, match="in use by another export"), export.export_lock(out):
        export.export(out, data_dir=source, splits=["validation"])


def test_a_folder_holding_other_files_is_refused_and_left_as_it_was(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = tmp_path / "mine"
    (mine / "data").mkdir(parents=True)
    (mine / "README.md").write_text("my notes\n")
    pq.write_table(pa.table({"x": [1]}), mine / "data" / "mine.parquet")
    before = {path: path.read_bytes() for path in mine.rglob("*") if path.is_file()}
    assert cli.main(["export", "--data-dir", str(source), "--output-dir", str(mine)]) == 2
    assert (
        "is not empty and not an earlier gmai-hf export (it holds README.md, data/mine.parquet)"
        in caplog.text
    )
    assert {path: path.read_bytes() for path in mine.rglob("*") if path.is_file()} == before
    # an earlier export is replaced whole; with a file of someone else's in it, it is refused
    earlier = tmp_path / "earlier"
    export.export(earlier, data_dir=source, splits=["validation"], max_shard_size="40KB")
    export.export(earlier, data_dir=source, splits=["validation"])
    assert [path.name for path in shards(earlier)] == ["validation-00000-of-00001.parquet"]
    (earlier / "data" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"it holds data/notes\.txt"):
        export.export(earlier, data_dir=source, splits=["validation"])
    assert (earlier / "data" / "notes.txt").read_text() == "mine"
    assert not [path.name for path in tmp_path.iterdir() if path.is_dir() and path.name.startswith(".")]


# --- the synthetic label travels with the data ------------------------------------------------------


def test_an_export_of_the_sample_keeps_its_synthetic_label(tmp_path: Path) -> None:
    out = tmp_path / "sample-export"
    export.export(out, data_dir=SAMPLE_DIR, splits=["validation"])
    for name, data_dir in (("direct", SAMPLE_DIR), ("exported", out)):
        config = RunConfig(model="random", output_dir=tmp_path / name, data_dir=str(data_dir), limit=8)
        assert runner.run(config) == 0
    data = json.loads((tmp_path / "exported" / "results.json").read_text())["data"]
    assert data["source"] == "sample" and data["export"] == str(out) and data["official"] is False
    assert "Synthetic sample" in "\n".join((tmp_path / "exported" / "report.md").read_text().splitlines()[:4])
    assert (
        cli.main(
            [
                "compare",
                str(tmp_path / "direct"),
                str(tmp_path / "exported"),
                "--output-dir",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    assert (tmp_path / "c" / "comparison.md").read_text().splitlines()[2].startswith("> **Synthetic sample**")


# --- compare: the same questions, not only the same indices ------------------------------------------


def test_compare_refuses_runs_whose_questions_differ_in_text_or_image(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = list(iter_rows(20, seed=7, reference_every=0))
    one = tmp_path / "one"
    one.mkdir()
    write_tsv(one / schema.VAL_FILENAME, rows)
    for row in rows[3:6]:
        row["question"] += " (reworded)"
    rows[8]["image"], rows[9]["image"] = rows[9]["image"], rows[8]["image"]
    assert rows[8]["image"] != rows[9]["image"]
    other = tmp_path / "other"
    other.mkdir()
    write_tsv(other / schema.VAL_FILENAME, rows)  # the same indices, answers and labels
    for name, data_dir in (("a", one), ("b", other), ("c", one)):
        assert runner.run(RunConfig(model="random", output_dir=tmp_path / name, data_dir=str(data_dir))) == 0
    out = str(tmp_path / "out")
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", out]) == 2
    assert "asked different questions: 5 of the 20 questions they share differ" in caplog.text
    assert "(indices 3, 4, 5, 8, 9)" in caplog.text
    caplog.clear()
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--output-dir", out]) == 0
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["content_checked"] is True
    # predictions written before fingerprints: still compared, with a warning that content was not checked
    predictions = tmp_path / "b" / "predictions.jsonl"
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    predictions.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "fingerprint"}) + "\n" for r in records)
    )
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", out]) == 0
    assert "could not be checked" in caplog.text
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["content_checked"] is False
