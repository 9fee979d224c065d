"""The protocols: under ``vlmevalkit`` a model sees exactly VLMEvalKit's JPEG files and option lists;
under ``lossless`` the original bytes and every option text."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmai_hf import prompts, protocols, runner
from gmai_hf.backends import Prepared, Question
from gmai_hf.runner import RunConfig
from gmai_hf.testing.data import encode_image, make_image, make_rows, write_tsv


def vlmevalkit_image_file(b64: str, target: Path) -> Path:
    """VLMEvalKit's ``decode_base64_to_image_file`` (vlmeval/smp/vlm.py), re-implemented in its shape."""
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    if image.mode in ("RGBA", "P", "LA"):
        image = image.convert("RGB")
    image.save(target)
    return target


def _keep(question: Question) -> Prepared:
    return Prepared(question.index, tuple(question.options), {"question": question})


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("LA", "PNG"), ("RGB", "JPEG")],
)
def test_the_image_a_model_gets_is_vlmevalkits_file(tmp_path: Path, mode: str, fmt: str) -> None:
    image = make_image(random.Random(1), 37, "RGB" if mode in ("P", "LA") else mode)
    if mode == "P":
        image = image.convert("P")
    elif mode == "LA":
        image = image.convert("LA")
    b64 = encode_image(image, fmt)
    expected_file = vlmevalkit_image_file(b64, tmp_path / "0.jpg")
    ours = protocols.image_bytes(base64.b64decode(b64), "vlmevalkit")
    assert ours == expected_file.read_bytes(), "byte-identical to the .jpg VLMEvalKit writes"
    with Image.open(expected_file) as theirs:
        pixels = np.asarray(theirs.convert("RGB"))
    assert np.array_equal(np.asarray(Question(0, "q", {}, ours).image), pixels)
    assert protocols.image_bytes(base64.b64decode(b64), "lossless") == base64.b64decode(b64)


def test_the_runner_hands_backends_the_protocols_image_and_options(tmp_path: Path) -> None:
    rows = make_rows(4, seed=8, reference_every=0, distinct_images=4)
    rows[0].update(A="liver", B="NA", C="None", D="kidney", E=None, answer="A")
    write_tsv(tmp_path / "GMAI-MMBench_VAL.tsv", rows)
    config = RunConfig(model="x", output_dir=tmp_path / "out", data_dir=str(tmp_path))
    loaded = runner.load_questions(config)
    for protocol in protocols.PROTOCOLS:
        dataset = runner.QuestionDataset(loaded.ds, "vlmevalkit", protocol, _keep, needs_image=True)
        question = dataset[0].features["question"]
        raw = base64.b64decode(rows[0]["image"])
        if protocol == "vlmevalkit":
            assert question.options == {"A": "liver", "D": "kidney"}  # what pandas read as missing is gone
            assert "B. NA" not in question.prompt and "D. kidney" in question.prompt
            assert (
                question.image_bytes
                == vlmevalkit_image_file(rows[0]["image"], tmp_path / "x.jpg").read_bytes()
            )
        else:
            assert question.options == {"A": "liver", "B": "NA", "C": "None", "D": "kidney"}
            assert "B. NA\nC. None\n" in question.prompt and question.image_bytes == raw
        presented = protocols.present_row(rows[0], protocol)
        assert question.prompt == prompts.build_prompt(presented, "vlmevalkit")


def test_runs_record_their_protocol_and_match_the_options_they_showed(tmp_path: Path) -> None:
    import json

    rows = make_rows(6, seed=8, reference_every=0, distinct_images=2)
    rows[0].update(A="NA", B="liver", C=None, D=None, E=None, answer="B")
    write_tsv(tmp_path / "GMAI-MMBench_VAL.tsv", rows)
    for protocol in protocols.PROTOCOLS:
        out = tmp_path / protocol
        assert (
            runner.run(RunConfig(model="random", output_dir=out, data_dir=str(tmp_path), protocol=protocol))
            == 0
        )
        results = json.loads((out / "results.json").read_text())
        assert results["run"]["protocol"] == protocol and f"| {protocol} |" in (out / "report.md").read_text()
        first = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
        # VLMEvalKit never showed "NA": the only option left is B, which the random guess must pick
        assert first["prediction"] == "B" if protocol == "vlmevalkit" else first["prediction"] in ("A", "B")
    assert json.loads((tmp_path / "vlmevalkit" / "results.json").read_text())["run"]["max_new_tokens"] == 2048


def test_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'jpeg': choose one of vlmevalkit, lossless"):
        protocols.present_row({}, "jpeg")
