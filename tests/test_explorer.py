"""explorer.html in a real browser (Debian's chromium, driven by Playwright; no browser download):
opened from disk, clicked through, its numbers checked against results.json and predictions.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from gmai_hf import SAMPLE_DIR, load_split

CHROMIUM = "/usr/bin/chromium"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def gmai_hf(*args: str | Path) -> None:
    subprocess.run([sys.executable, "-m", "gmai_hf.cli", *map(str, args)], check=True, env=ENV)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs of the random model (seeds 0 and 1) on the sample, reported together."""
    root = tmp_path_factory.mktemp("explorer")
    gmai_hf("run", "--model", "random", "--sample", "--output-dir", root / "A")
    gmai_hf("run", "--model", "random", "--sample", "--seed", "1", "--output-dir", root / "B")
    gmai_hf("compare", root / "A", root / "B", "--output-dir", root / "D")
    gmai_hf("report", root / "A", root / "B", "--output-dir", root / "D")
    return root


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser, path: Path) -> Page:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    blocked: list[str] = []
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith("file://")
            else (blocked.append(route.request.url), route.abort())
        ),
    )
    page.goto(path.as_uri())
    page.wait_for_function("window.explorerReady === true")
    page.errors, page.blocked = errors, blocked
    return page


def cell(node: dict) -> str:
    return f"{100 * node['accuracy']:.1f}%"


def row_cells(page: Page, level: int, name: str) -> list[str]:
    row = page.locator(f"#tree tr.level-{level}").filter(has=page.locator(".node-name", has_text=name)).first
    return [text.strip() for text in row.locator("td").all_inner_texts()]


def summary(page: Page) -> str:
    return page.locator("#summary").inner_text()


def test_tree_clicks_and_keywords_match_results(report: Path, browser) -> None:
    a, b = (json.loads((report / run / "results.json").read_text()) for run in "AB")
    comparison = json.loads((report / "D" / "comparison.json").read_text())
    page = open_page(browser, report / "D" / "explorer.html")
    # default view: clinical VQA task, every task with n, accuracy per run, CI and chance as results.json
    for task, node in a["tree"]["clinical_vqa_task"].items():
        cells = row_cells(page, 0, task)
        other = b["tree"]["clinical_vqa_task"][task]
        assert cells[1] == str(node["total"])
        assert cells[2] == cell(node) and cells[4] == cell(other)
        low, high = a["by"]["clinical_vqa_task"][task]["ci95"]  # the same questions as the node
        assert cells[3] == f"{100 * low:.1f}%–{100 * high:.1f}%"
        assert cells[6] == f"{100 * node['chance']:.1f}%"
        paired = comparison["tree"]["clinical_vqa_task"][task]
        assert float(cells[8].rstrip(" *")) == pytest.approx(paired["p_adjusted"], rel=0.05)
        assert cells[8].endswith("*") == paired["significant"]
    # a department, then one of its modalities
    page.select_option("#view", "department")
    department, node = max(a["tree"]["department"].items(), key=lambda item: item[1]["total"])
    page.locator("#tree tr.level-0 .node-name", has_text=department).first.click()
    assert summary(page).startswith(f"{node['total']} questions in {department}")
    assert f"{cell(node)} ({node['correct']}/{node['total']})" in summary(page)
    modality, child = max(node["children"].items(), key=lambda item: item[1]["total"])
    page.locator("#tree tr.level-1 .node-name", has_text=modality).first.click()
    other = b["tree"]["department"][department]["children"][modality]
    text = summary(page)
    assert text.startswith(f"{child['total']} questions in {department} › {modality}")
    assert f"{cell(child)} ({child['correct']}/{child['total']})" in text
    assert f"{cell(other)} ({other['correct']}/{other['total']})" in text
    assert page.locator("#question-list li").count() == min(child["total"], 100)
    assert page.locator("#question-list li img").count() == page.locator("#question-list li").count()
    # keywords (as --keywords: any word, case-insensitive, in question or options) over every question
    page.locator("#clear-node").click()
    questions = load_split("validation", SAMPLE_DIR).remove_columns("image").to_list()
    word = questions[0]["question"].split()[-2].upper()
    hits = {
        q["index"]
        for q in questions
        if word.lower() in "\n".join([q["question"], *(q[k] or "" for k in "ABCDE")]).lower()
    }
    assert 0 < len(hits) < len(questions)
    page.fill("#keywords", word)
    records = [json.loads(line) for line in (report / "A" / "predictions.jsonl").read_text().splitlines()]
    correct = sum(r["hit"] for r in records if r["index"] in hits)
    assert summary(page).startswith(f"{len(hits)} questions")
    assert f"{100 * correct / len(hits):.1f}% ({correct}/{len(hits)})" in summary(page)
    # wrong for run A: every listed question is a miss for A
    page.fill("#keywords", "")
    page.select_option("#wrong", "0")
    wrong = sum(not r["hit"] for r in records)
    assert summary(page).startswith(f"{wrong} questions") and "0.0% (0/" in summary(page)
    assert page.errors == [] and page.blocked == []


def test_no_images_and_test_split(tmp_path: Path, browser) -> None:
    gmai_hf("run", "--model", "random", "--sample", "--split", "test", "--output-dir", tmp_path / "T")
    gmai_hf("report", tmp_path / "T", "--output-dir", tmp_path / "R", "--no-images")
    assert not (tmp_path / "R" / "explorer").exists()
    assert (tmp_path / "T" / "explorer").is_dir()  # the run's own report has them
    page = open_page(browser, tmp_path / "R" / "explorer.html")
    assert page.locator("#question-list li img").count() == 0
    assert "--no-images" in page.locator("#honesty").inner_text()
    records = [json.loads(line) for line in (tmp_path / "T" / "predictions.jsonl").read_text().splitlines()]
    distribution = page.locator("#distribution").inner_text()
    for letter in {r["choice"] for r in records if r["choice"]}:
        count = sum(r["choice"] == letter for r in records)
        assert f"{letter} {count} ({100 * count / len(records):.1f}%)" in distribution
    assert "correct answer" not in page.locator("#question-list").inner_text()
    assert page.errors == [] and page.blocked == []
