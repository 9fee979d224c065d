"""``explorer.html``: the runs of a report over the lexical tree, in a page that opens from disk.

The report writer hands this module its runs; it writes one self-contained page (template, CSS and
plain JavaScript are package data, inlined) with a small JSON document embedded in it (file://
pages cannot fetch a sibling file), and the images beside it in ``explorer/``. The document's
layout is in docs/explorer.md. The runs do not store images or question text, so they are read
back from the split the first run scored (``results.json`` ``run.data_dir``/``run.dataset``); where
that fails the page is written without them and says so.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from gmai_hf import matching, protocols, schema
from gmai_hf.files import write_atomic
from gmai_hf.reports.markdown import header_section
from gmai_hf.reports.records import Run

logger = logging.getLogger(__name__)

#: Layout version of the embedded document (docs/explorer.md); bumped when a key changes meaning.
DOCUMENT_VERSION = 1
PAGE_FILE = "explorer.html"
ASSET_DIR = "explorer"
#: Thumbnails in the question list: at most this many pixels on the longer side.
THUMBNAIL_PX = 256
#: "Full size" images are downscaled to this, and written only while the page's images stay under
#: the budget (the full VAL split, 4,550 questions, must stay under 60 MB with its thumbnails);
#: past it a click shows the thumbnail, and the page says how many.
FULL_PX = 1024
IMAGE_BUDGET_BYTES = 50 * 1024 * 1024
#: Full-size images stop where they and the estimated thumbnails would pass this share of the budget.
FULL_SHARE = 0.8
QUESTION_KEYS = ("clinical_vqa_task", "department", "perceptual_granularity", "modality", "category")


def _questions(run: Run) -> tuple[Any | None, str | None]:
    """The split ``run`` scored, read back for question text and images, or why it could not be."""
    info = run.info
    try:
        from gmai_hf.builder import load_split

        return load_split(run.split, info.get("data_dir"), dataset=info.get("dataset")), None
    except Exception as error:  # any failure to find the data: the page is still written, without them
        logger.warning("explorer: the %s split's questions could not be read (%s)", run.split, error)
        return None, f"the questions and images of the {run.split} split could not be read: {error}"


def _chance(row: dict[str, Any], answer: str | None, run: Run) -> float:
    """A uniform guess's expected accuracy among the options ``run``'s protocol showed, as
    ``scoring.compute`` defines it (0 where the answer is not among them)."""
    shown = protocols.present_row(row, str(run.info.get("protocol") or "vlmevalkit"))
    choices = matching.present_options([shown.get(letter) for letter in schema.OPTION_LETTERS])
    return 1 / len(choices) if choices and (answer is None or answer in choices) else 0.0


def _save(image: Any, path: Path, longest: int) -> int:
    """``image`` downscaled to ``longest`` pixels as JPEG (PNG where it has transparency); its bytes."""
    image = image.copy()
    image.thumbnail((longest, longest))
    buffer = io.BytesIO()
    if image.mode in ("RGBA", "LA", "P"):
        image.save(buffer, format="PNG", optimize=True)
        path = path.with_suffix(".png")
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
    path.write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


class _ImageBudget:
    """Writes each question's thumbnail, and its full-size image while the thumbnails still to come
    (estimated from those written so far) will fit: all images together stay under
    ``IMAGE_BUDGET_BYTES``; past it a question keeps only its thumbnail, or, last, no image."""

    def __init__(self, questions: int) -> None:
        self.remaining, self.written = questions, 0
        self.thumbnail_bytes = self.thumbnail_count = self.thumbnails_only = self.left_out = 0

    def add(self, question: dict[str, Any], image: Any, folder: Path) -> None:
        self.remaining -= 1
        if self.written >= IMAGE_BUDGET_BYTES:
            self.left_out += 1
            return
        thumb = folder / f"{question['index']}_thumb.jpg"
        size = _save(image, thumb, THUMBNAIL_PX)
        self.written += size
        self.thumbnail_bytes, self.thumbnail_count = self.thumbnail_bytes + size, self.thumbnail_count + 1
        question["thumb"] = question["full"] = f"{ASSET_DIR}/{_written_name(thumb)}"
        thumbnails_to_come = self.thumbnail_bytes / self.thumbnail_count * self.remaining
        if self.written + thumbnails_to_come < IMAGE_BUDGET_BYTES * FULL_SHARE:
            full = folder / f"{question['index']}.jpg"
            self.written += _save(image, full, FULL_PX)
            question["full"] = f"{ASSET_DIR}/{_written_name(full)}"
        else:
            self.thumbnails_only += 1


def _decode(value: dict[str, Any] | None) -> Any:
    """The PIL image of a stored ``{"bytes", "path"}`` value; None when there is none or it does not
    decode (a broken image is the run's recorded failure, not a reason to lose the page)."""
    from PIL import Image

    if not value:
        return None
    try:
        data = value.get("bytes") or Path(value["path"]).read_bytes()
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, Image.DecompressionBombError):
        return None
    return image


def build_document(
    runs: Sequence[Run], output_dir: Path, images: bool = True, comparison: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The explorer's JSON document (docs/explorer.md); writes the images under ``output_dir/explorer``."""
    indices = sorted({int(r["index"]) for run in runs for r in run.records})
    by_run = [{int(r["index"]): r for r in run.records} for run in runs]
    ds, problem = _questions(runs[0])
    rows: dict[int, dict[str, Any]] = {}
    if ds is not None:
        position = {int(i): n for n, i in enumerate(ds["index"])}
        wanted = [position[i] for i in indices if i in position]
        columns = [c for c in ds.column_names if c != "image"]
        for row in ds.select_columns(columns).select(wanted).to_list():
            rows[int(row["index"])] = row
    notes = [problem] if problem else []
    image_dir = output_dir / ASSET_DIR
    with_images = images and ds is not None and "image" in ds.column_names
    if with_images:
        import datasets

        image_dir.mkdir(parents=True, exist_ok=True)
        ds = ds.cast_column("image", datasets.Image(decode=False))  # decoded here, per question
    undecodable = 0
    budget = _ImageBudget(len(indices))
    questions = []
    for i in indices:
        row = rows.get(i, {})
        first = next(records[i] for records in by_run if i in records)
        options = {k: row[k] for k in schema.OPTION_LETTERS if row.get(k) not in (None, "")}
        question: dict[str, Any] = {
            "index": i,
            "question": row.get("question"),
            "options": options,
            "answer": first.get("answer"),
            "chance": _chance(row, first.get("answer"), runs[0]) if row else None,
            **{key: first.get(key) for key in QUESTION_KEYS},
            "thumb": None,
            "full": None,
            "runs": [
                [r.get("prediction"), r.get("choice"), r.get("matched_by"), r.get("hit")]
                if (r := records.get(i)) is not None
                else None
                for records in by_run
            ],
        }
        if with_images and i in rows:
            image = _decode(ds[position[i]]["image"])
            if image is not None:
                budget.add(question, image, image_dir)
            else:
                undecodable += 1
        questions.append(question)
    if not images:
        notes.append("written with --no-images: no thumbnails")
    if undecodable:
        notes.append(f"{undecodable} questions shown without their image (it does not decode)")
    if budget.thumbnails_only:
        notes.append(f"{budget.thumbnails_only} images shown at thumbnail size only (the page's size budget)")
    if budget.left_out:
        notes.append(f"{budget.left_out} questions shown without their image (the page's size budget)")
    notes.append(f"full-size images are downscaled to at most {FULL_PX} px")
    return {
        "version": DOCUMENT_VERSION,
        "honesty": header_section(runs),
        "notes": notes,
        "split": runs[0].split,
        "has_answers": all(run.has_answers for run in runs),
        "views": list(schema.TREE_VIEWS),
        "runs": [
            {
                "label": run.label,
                "model": run.model,
                **{k: run.results.get(k) for k in ("accuracy", "correct", "total", "unmatched", "chance")},
            }
            for run in runs
        ],
        "comparison": comparison,
        "questions": questions,
    }


def _written_name(path: Path) -> str:
    """The name :func:`_save` wrote ``path`` under (it may have switched to PNG)."""
    return path.name if path.exists() else path.with_suffix(".png").name


def find_comparison(runs: Sequence[Run], output_dir: Path) -> dict[str, Any] | None:
    """``comparison.json`` of two of these runs (``gmai-hf compare``), in the report folder or a run's."""
    labels = {run.label for run in runs}
    for folder in (output_dir, *(run.path for run in runs)):
        path = folder / "comparison.json"
        if path.is_file():
            result = json.loads(path.read_text(encoding="utf-8"))
            if {result["a"]["label"], result["b"]["label"]} <= labels:
                return {k: result[k] for k in ("a", "b", "alpha", "test", "adjustment", "tree", "overall")}
    return None


def write_explorer(runs: Sequence[Run], output_dir: Path, images: bool = True) -> Path:
    """Write ``output_dir/explorer.html`` (and its images): see the module docstring."""
    document = build_document(runs, output_dir, images, find_comparison(runs, output_dir))
    assets = resources.files(__package__) / "assets"
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    page = (
        (assets / "page.html")
        .read_text(encoding="utf-8")
        .replace("/*STYLE*/", (assets / "explorer.css").read_text(encoding="utf-8"))
        .replace("/*SCRIPT*/", (assets / "explorer.js").read_text(encoding="utf-8"))
        .replace("/*DATA*/", data)
    )
    return write_atomic(output_dir / PAGE_FILE, page)
