"""How questions are presented to a model: the named evaluation protocols.

A number means what the leaderboard's means only when the model saw what VLMEvalKit showed it.
VLMEvalKit (open-compass/VLMEvalKit) reads the TSV with ``pandas.read_csv(sep="\\t")`` and writes
every image to ``{index}.jpg`` before inference (``vlmeval/smp/vlm.py``
``decode_base64_to_image_file``: RGBA/P images (and LA, since a20fe37c, 2025-04-15) converted to
RGB, then ``image.save(path)``: JPEG with Pillow's defaults, quality 75). So:

- ``vlmevalkit`` (default): images re-encoded exactly so; option cells pandas reads as missing
  (``"None"``, ``"NA"``, ``"N/A"``, ``"null"``, ``"nan"``, ...) are missing options: dropped from
  the prompt and from answer matching;
- ``lossless``: the original image bytes and every option text verbatim; use it to measure a
  model on the data as published (e.g. fine detail a JPEG at quality 75 blurs), not to rank it
  against the leaderboard.

Everything else (prompt, matching, generation length) is the same under both.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from gmai_hf import schema

PROTOCOLS: tuple[str, ...] = ("vlmevalkit", "lossless")
DEFAULT_PROTOCOL = "vlmevalkit"

#: The strings ``pandas.read_csv`` turns into missing values by default (pandas'
#: ``STR_NA_VALUES``), so VLMEvalKit never shows such an option to a model.
PANDAS_NA_STRINGS: frozenset[str] = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)

#: Image modes VLMEvalKit converts to RGB before saving the JPEG (it saves the others, e.g. "L",
#: as they are).
VLMEVALKIT_RGB_MODES: frozenset[str] = frozenset({"RGBA", "P", "LA"})


def check(protocol: str) -> str:
    """``protocol`` if it is known; ``ValueError`` naming the choices otherwise."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    return protocol


#: The key :func:`present_row` adds where the protocol hides options: their letters, so that
#: scoring can tell an answer the protocol does not show (expected) from a mismatch of the data.
HIDDEN = "hidden_options"


def present_row(row: Mapping[str, Any], protocol: str) -> dict[str, Any]:
    """``row`` with its option cells as the protocol shows them (missing: ``None``)."""
    shown = dict(row)
    if check(protocol) == "vlmevalkit":
        hidden = tuple(
            letter
            for letter in schema.OPTION_LETTERS
            if shown.get(letter) is not None and str(shown[letter]) in PANDAS_NA_STRINGS
        )
        if hidden:
            shown.update(dict.fromkeys(hidden), **{HIDDEN: hidden})
    return shown


def image_bytes(data: bytes, protocol: str) -> bytes:
    """The image file a model reads under ``protocol``: VLMEvalKit's JPEG, or ``data`` itself.

    Raises whatever Pillow raises for undecodable bytes; the caller names the question.
    """
    if check(protocol) == "lossless":
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        converted = image.convert("RGB") if image.mode in VLMEVALKIT_RGB_MODES else image
        buffer = io.BytesIO()
        converted.save(buffer, format="JPEG")  # what image.save("{index}.jpg") does
    return buffer.getvalue()
