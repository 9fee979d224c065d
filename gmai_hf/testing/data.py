"""Write TSVs exactly in the official GMAI-MMBench format, filled with synthetic questions.

The files match the real ones byte for byte in structure: the official header (case and order),
pandas ``to_csv(sep="\\t")`` quoting, base64 images, empty ``E`` fields, 2- to 5-option questions,
global test indices, no ``answer`` column in test, and VLMEvalKit's image references (an ``image``
field holding the ``index`` of an earlier row). Labels are the benchmark's real label strings; the
questions and images are made up.
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import Image

from gmai_hf import schema

_CATEGORIES = (
    "liver",
    "kidney",
    "spleen",
    "pancreas",
    "lung",
    "heart",
    "brain",
    "stomach",
    "colon",
    "normal",
    "glaucoma",
    "diabetic retinopathy",
    "melanoma",
    "nevus",
    "pneumonia",
    "tumor",
    "grasper",
    "scissors",
    "hook",
    "clipper",
    "male",
    "female",
    "mild",
    "moderate",
    "severe",
    "femur",
    "tibia",
    "neutrophil",
    "lymphocyte",
    "malaria parasite",
    "None",
    "NA",
)

_QUESTION_TEMPLATES = (
    "What is the {task} finding in this {modality} image?",
    "Which option best describes the region in this {modality} image ({granularity})?",
    'The "{modality}" scan shows which structure?',
    "Look at the {modality} image.\nWhat does the highlighted area contain?",
    "Identify the\tlabel for this {modality} image.",
)


def encode_image(image: Image.Image, fmt: str = "PNG") -> str:
    """Base64 of ``image`` saved as ``fmt`` (the official files hold PNG)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def make_image(rng: random.Random, size: int = 16, mode: str = "RGB", noise: bool = True) -> Image.Image:
    """A synthetic image of ``size`` x ``size`` pixels.

    ``noise``: random pixels, incompressible, so the PNG is as large as a real scan of that size
    (for benchmarks); otherwise a smooth phantom (a bright disc on a gradient) that compresses
    to little and looks like something (for the bundled sample).
    """
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    if noise:
        return Image.frombytes(mode, (size, size), rng.randbytes(size * size * channels))
    cx, cy, radius = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, rng.uniform(0.1, 0.3) * size
    gray = Image.new("L", (size, size))
    gray.putdata(
        [
            255 if (x - cx) ** 2 + (y - cy) ** 2 < radius**2 else int(40 + 120 * y / size)
            for y in range(size)
            for x in range(size)
        ]
    )
    return gray.convert(mode)


def make_rows(n: int, **options: Any) -> list[dict[str, Any]]:
    """``n`` synthetic questions as dicts keyed by our feature names (options: :func:`iter_rows`)."""
    return list(iter_rows(n, **options))


def iter_rows(
    n: int,
    *,
    start_index: int = 0,
    seed: int = 0,
    with_answer: bool = True,
    image_size: int = 16,
    distinct_images: int = 8,
    reference_every: int = 7,
    noise: bool = True,
) -> Iterator[dict[str, Any]]:
    """``n`` synthetic questions as dicts keyed by our feature names, lazily (files of many GB).

    ``image`` holds the base64 text exactly as it would appear in the file: a PNG (RGB, and
    also grayscale, RGBA and one JPEG among the ``distinct_images``), or, every
    ``reference_every`` rows (0: never), the index of an earlier row sharing its image.
    ``noise``: see :func:`make_image`.
    """
    rng = random.Random(seed)
    variants = [("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("RGB", "JPEG")]
    formats = [variants[i] if i < len(variants) else ("RGB", "PNG") for i in range(distinct_images)]
    images = [encode_image(make_image(rng, image_size, mode, noise), fmt) for mode, fmt in formats]
    tasks = list(schema.CLINICAL_VQA_TASKS)
    departments = [*schema.DEPARTMENTS, None]
    for offset in range(n):
        index = start_index + offset
        task = rng.choice(tasks)
        modality = rng.choice(schema.MODALITIES)
        granularity = rng.choice(schema.PERCEPTUAL_GRANULARITIES)
        n_options = rng.choice((2, 3, 4, 4, 4, 5))
        texts = rng.sample(_CATEGORIES, n_options)
        correct = rng.randrange(n_options)
        question = rng.choice(_QUESTION_TEMPLATES).format(
            task=task.lower(), modality=modality, granularity=granularity
        )
        row: dict[str, Any] = {"index": index, "question": question}
        for i, letter in enumerate(schema.OPTION_LETTERS):
            row[letter] = texts[i] if i < n_options else None
        if with_answer:
            row["answer"] = schema.OPTION_LETTERS[correct]
        if reference_every and offset % reference_every == reference_every - 1:
            row["image"] = str(start_index + rng.randrange(offset))
        else:
            row["image"] = images[offset % len(images)]
        row.update(
            category=texts[correct],
            clinical_vqa_task=task,
            # Only some Attribute Recognition rows lack a department, as in the real data.
            department=rng.choice(departments if task == "Attribute Recognition" else departments[:-1]),
            perceptual_granularity=granularity,
            modality=modality,
            original_task=f"synthetic_{task.split()[0].lower()}_{rng.randrange(5)}",
        )
        yield row


def write_tsv(
    path: str | Path,
    rows: Iterator[dict[str, Any]] | Sequence[dict[str, Any]],
    *,
    header: Sequence[str] | None = None,
) -> Path:
    """Write ``rows`` (feature-named dicts) as pandas ``to_csv(sep="\\t", index=False)`` would.

    ``header`` lists column names in file order (official or VLMEvalKit's lower-cased ones); by
    default the official test header, with ``answer`` after ``E`` when the rows carry one.
    Missing values become empty fields.
    """
    path = Path(path)
    rows = iter(rows)
    first = next(rows, None)
    if header is None:
        header = list(schema.OFFICIAL_TEST_HEADER)
        if first is not None and "answer" in first:
            header.insert(header.index("E") + 1, "answer")
    to_feature = {**schema.OFFICIAL_TO_FEATURE, **{v: k for k, v in schema.VLMEVALKIT_NAME.items()}}
    features = [to_feature.get(name, name) for name in header]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        if first is not None:
            for row in itertools.chain([first], rows):
                writer.writerow(["" if row.get(f) is None else row[f] for f in features])
    return path


def _benchmark_row_iters(
    *,
    n_val: int,
    test_parts: Sequence[int],
    per_part: int,
    seed: int,
    image_size: int,
    noise: bool,
) -> Iterator[tuple[str, int, Iterator[dict[str, Any]]]]:
    """(split, test part or 0, rows) for each file of a generated benchmark, in file order."""
    if n_val:
        yield "validation", 0, iter_rows(n_val, seed=seed, image_size=image_size, noise=noise)
    for part in test_parts:
        rows = iter_rows(
            per_part,
            start_index=(part - 1) * per_part,
            seed=seed + part,
            with_answer=False,
            image_size=image_size,
            noise=noise,
        )
        yield "test", part, rows


def write_benchmark(
    data_dir: str | Path,
    *,
    n_val: int = 40,
    test_parts: Sequence[int] = tuple(range(1, schema.TEST_PARTS + 1)),
    per_part: int = 6,
    seed: int = 0,
    image_size: int = 16,
    noise: bool = True,
    renamed_test: bool = False,
) -> Path:
    """A data directory laid out like the official release: VAL plus the chosen test parts.

    Test indices are global (part ``k`` starts at ``(k - 1) * per_part``), as in the real files.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    name = schema.test_filename_renamed if renamed_test else schema.test_filename
    for split, part, rows in _benchmark_row_iters(
        n_val=n_val, test_parts=test_parts, per_part=per_part, seed=seed, image_size=image_size, noise=noise
    ):
        write_tsv(data_dir / (schema.VAL_FILENAME if split == "validation" else name(part)), rows)
    return data_dir


# --- Ground truth: what a dataset built from these files must hold ---------------------------------
#
# Computed without ``datasets``, so the packaged builder under today's ``datasets`` and the loading
# script under ``datasets`` 3.x (tested in two environments) are compared with the same rows.


#: The Arrow schema of every split (``Dataset.data.schema`` without its metadata), spelled out in
#: pyarrow rather than derived from ``datasets.Features``, whose conversion is what is being tested.
ARROW_SCHEMA: pa.Schema = pa.schema(
    [
        ("index", pa.int64()),
        *[(name, pa.string()) for name in ("question", *schema.OPTION_LETTERS, "answer")],
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        *[(name, pa.string()) for name in schema.TREE_COLUMNS],
    ]
)


def dataset_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Generated rows as the dataset must hold them: every feature, image references resolved, the
    image as its decoded bytes (what ``datasets.Image(decode=False)`` gives back)."""
    rows = list(rows)
    by_index = {row["index"]: row for row in rows}
    out = []
    for row in rows:
        image = row["image"]
        while len(image) <= schema.IMAGE_REFERENCE_MAX_CHARS:
            image = by_index[int(image)]["image"]
        out.append({**dict.fromkeys(schema.FEATURE_NAMES), **row, "image": base64.b64decode(image)})
    return out


def benchmark_rows(
    *,
    n_val: int = 40,
    test_parts: Sequence[int] = tuple(range(1, schema.TEST_PARTS + 1)),
    per_part: int = 6,
    seed: int = 0,
    image_size: int = 16,
    noise: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Per split, the rows a dataset built from :func:`write_benchmark`'s files (same arguments) holds."""
    generated: dict[str, list[dict[str, Any]]] = {}
    for split, _, rows in _benchmark_row_iters(
        n_val=n_val, test_parts=test_parts, per_part=per_part, seed=seed, image_size=image_size, noise=noise
    ):
        generated.setdefault(split, []).extend(rows)
    return {split: dataset_rows(rows) for split, rows in generated.items()}


def file_rows(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """The rows of ``split`` in ``data_dir`` as gmai-hf's reader returns them, without ``datasets``
    (ground truth for files that were not generated here, such as the bundled sample)."""
    from gmai_hf import builder

    seen: dict[int, tuple[Path, int]] = {}
    return [
        row
        for path in builder.local_split_files(data_dir, split)
        for row in builder.iter_rows(path, seen=seen, answers=split == "validation")
    ]


def stored_rows(ds: Any) -> list[dict[str, Any]]:
    """The rows of a ``Dataset`` or ``IterableDataset``, the image as its stored bytes (not decoded)."""
    import datasets

    rows = []
    for row in ds.cast_column("image", datasets.Image(decode=False)):
        rows.append({**row, "image": row["image"]["bytes"]})
    return rows
