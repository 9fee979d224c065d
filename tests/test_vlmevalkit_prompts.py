"""Per-wrapper VLMEvalKit prompts for GMAI-MMBench: the texts below are facts read from VLMEvalKit's
source at e8e78f0 (each wrapper's ``build_prompt`` for an MCQ dataset), not produced by its code."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from gmai_hf import protocols, runner, schema
from gmai_hf import vlmevalkit_prompts as vp
from gmai_hf.runner import RunConfig
from gmai_hf.testing.data import make_rows, write_tsv
from gmai_hf.testing.models import TINY_MODELS
from gmai_hf.testing.proxy import FaultProxy

ROW = {"question": "Which organ is shown?", "A": "liver", "B": "kidney", "C": "spleen", "D": None, "E": None}
CN_ROW = {"question": "图中是什么器官？", "A": "肝", "B": "肾"}
BARE_ROW = {"question": "Which organ is shown?"}

DATASET_EN = (
    "Question: Which organ is shown?\nOptions:\nA. liver\nB. kidney\nC. spleen\n"
    "Please select the correct answer from the options above. \n"
)
LLAVA_EN = (
    "Which organ is shown?\nA. liver\nB. kidney\nC. spleen\n"
    "Answer with the option's letter from the given choices directly."
)
EXPECTED_DATASET_CN = (
    None,
    "Question: 图中是什么器官？\nOptions:\nA. 肝\nB. 肾\n"
    "Please select the correct answer from the options above. \n",
)
BARE_DATASET = (None, "Question: Which organ is shown?\n")
VICUNA = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions. "
)

_LLAVA_INSTRUCTION = "Answer with the option's letter from the given choices directly."
GEMMA_SYSTEM = "You are a helpful assistant. "

#: wrapper -> (English row, Chinese row, row without options), each (system, text).
EXPECTED = {
    "Qwen2VLChat": (
        (
            None,
            "Question: Which organ is shown?\nOptions:\nA. liver\nB. kidney\nC. spleen\n"
            "Please select the correct answer from the options above.",
        ),
        (None, "Question: 图中是什么器官？\nOptions:\nA. 肝\nB. 肾\n请直接回答选项字母。"),
        (None, "Question: Which organ is shown?"),
    ),
    "Qwen3VLChat": (
        (
            None,
            "Question: Which organ is shown?\nOptions:\nA. liver\nB. kidney\nC. spleen\n"
            "Answer with the option letter only.",
        ),
        (None, "Question: 图中是什么器官？\nOptions:\nA. 肝\nB. 肾\nAnswer with the option letter only."),
        (None, "Question: Which organ is shown?"),
    ),
    "LLaVA": (
        (VICUNA, LLAVA_EN),
        (VICUNA, "图中是什么器官？\nA. 肝\nB. 肾\n请直接回答选项字母。"),
        (VICUNA, "Which organ is shown?\nAnswer the question directly."),
    ),
    "LLaVA_Next": (
        (None, LLAVA_EN),
        (None, "图中是什么器官？\nA. 肝\nB. 肾\n请直接回答选项字母。"),
        (None, "Which organ is shown?\nAnswer the question directly."),
    ),
    "InternVLChat": (
        (None, LLAVA_EN),
        (None, "图中是什么器官？\nA. 肝\nB. 肾\n请直接回答选项字母。"),
        (None, "Which organ is shown?\nAnswer the question directly."),
    ),
    "LLaVA_OneVision_HF": ((None, DATASET_EN), EXPECTED_DATASET_CN, BARE_DATASET),
    **dict.fromkeys(
        ("IDEFICS2", "SmolVLM"),
        (
            (None, DATASET_EN.strip()),
            (
                None,
                "Question: 图中是什么器官？\nOptions:\nA. 肝\nB. 肾\n"
                "Please select the correct answer from the options above.",
            ),
            (None, "Question: Which organ is shown?"),
        ),
    ),
    **dict.fromkeys(
        ("llama_vision", "Phi3Vision", "Phi4Multimodal", "DeepSeekVL2", "GPT4V", "Gemini", "Claude3V"),
        ((None, DATASET_EN), EXPECTED_DATASET_CN, BARE_DATASET),
    ),
    "Gemma3": (
        (GEMMA_SYSTEM, DATASET_EN),
        (GEMMA_SYSTEM, EXPECTED_DATASET_CN[1]),
        (GEMMA_SYSTEM, BARE_DATASET[1]),
    ),
    "Ovis2": (
        (None, LLAVA_EN),
        (
            None,
            "图中是什么器官？\nA. 肝\nB. 肾\n" + _LLAVA_INSTRUCTION,
        ),
        (None, "Which organ is shown?"),
    ),
    "molmo": (
        (None, "a_okvqa_mc: Which organ is shown?\nA: liver\nB: kidney\nC: spleen"),
        (None, "a_okvqa_mc: 图中是什么器官？\nA: 肝\nB: 肾"),
        (None, "a_okvqa_mc: Which organ is shown?"),
    ),
    "MiniCPM_V_2_6": (
        (
            None,
            "Question: Which organ is shown?\nOptions:\nA. liver\nB. kidney\nC. spleen\n\n"
            "Answer with the option's letter from the given choices directly.",
        ),
        (
            None,
            "Question: 图中是什么器官？\nOptions:\nA. 肝\nB. 肾\n\n"
            "Answer with the option's letter from the given choices directly.",
        ),
        (
            "Carefully read the following question Answer the question directly.",
            "Question: Which organ is shown?\n",
        ),
    ),
}


@pytest.mark.parametrize("wrapper", sorted(EXPECTED))
def test_each_wrapper_builds_vlmevalkits_text(wrapper: str) -> None:
    english, chinese, bare = EXPECTED[wrapper]
    prompt = vp.resolve(f"vlmevalkit:{wrapper}", None)
    assert prompt == f"vlmevalkit:{wrapper}@e8e78f0"
    assert vp.build(ROW, prompt) == english
    assert vp.build(CN_ROW, prompt) == chinese
    assert vp.build(BARE_ROW, prompt) == bare


def test_every_wrapper_is_tested() -> None:
    assert set(EXPECTED) == set(vp.WRAPPERS)


def test_unknown_wrapper_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: Qwen2VLChat, Qwen3VLChat"):
        vp.resolve("vlmevalkit:GPT5", None)
    with pytest.raises(ValueError, match="vlmevalkit:<Wrapper>"):
        RunConfig(model="random", output_dir=Path("x"), prompt="chatgpt").validate()


def test_dataset_prompt_and_llava_alias_keep_their_texts() -> None:
    from gmai_hf import prompts

    assert prompts.build_prompt(ROW, "vlmevalkit-dataset") == DATASET_EN
    assert prompts.build_prompt(ROW, "vlmevalkit") == DATASET_EN  # not resolved to a family
    assert prompts.build_prompt(ROW, "llava") == LLAVA_EN


def test_comparability_names_a_prompt_that_is_not_the_familys() -> None:
    own = {"prompt": "vlmevalkit:InternVLChat@e8e78f0", "model_type": "internvl", "backend": "transformers"}
    assert vp.comparability_problems(own) == []
    other = {**own, "prompt": "vlmevalkit-dataset"}
    assert "not InternVLChat's" in vp.comparability_problems(other)[0]
    served = {"prompt": "vlmevalkit-dataset", "backend": "openai"}
    assert "per-family prompt not applied" in vp.comparability_problems(served)[0]
    beams = {"prompt": "vlmevalkit:MiniCPM_V_2_6@e8e78f0", "backend": "openai"}
    assert "num_beams" in vp.comparability_problems(beams)[0]
    llama = {"prompt": "vlmevalkit:llama_vision@e8e78f0", "backend": "transformers", "max_new_tokens": 2048}
    assert "max_new_tokens=128 (this run: 2048)" in vp.comparability_problems(llama)[0]
    assert vp.comparability_problems({**llama, "max_new_tokens": 128}) == []
    qwen = {"prompt": "vlmevalkit:Qwen2VLChat@e8e78f0", "model_type": "qwen2_5_vl", "backend": "openai"}
    assert vp.comparability_problems(qwen) == []  # its resize is applied before any backend
    gemini = {"prompt": "vlmevalkit:Gemini@e8e78f0", "backend": "openai", "max_new_tokens": 2048}
    assert "google-genai" in vp.comparability_problems(gemini)[0]


@pytest.mark.parametrize(
    ("wrapper", "tokens"),
    [
        ("Qwen2VLChat", 2048),
        ("Qwen3VLChat", 32768),
        ("InternVLChat", 4096),
        ("IDEFICS2", 1024),
        ("llama_vision", 128),
        ("molmo", 200),
        ("Gemma3", 4096),
        ("Phi4Multimodal", 1000),
        ("Ovis2", 1024),
        ("GPT4V", 2048),
    ],
)
def test_the_wrappers_generation_length_is_the_default(wrapper: str, tokens: int) -> None:
    config = RunConfig(model="random", output_dir=Path("x"), prompt=f"vlmevalkit:{wrapper}")
    config.validate()
    assert config.max_new_tokens == tokens
    told = RunConfig(model="random", output_dir=Path("x"), prompt=f"vlmevalkit:{wrapper}", max_new_tokens=7)
    told.validate()
    assert told.max_new_tokens == 7


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    # qwen_vl_utils.smart_resize, worked by hand: enlarged to >= 1280*28*28 px, shrunk to <= 16384*28*28
    [(200, 300, (840, 1232)), (4000, 5000, (3192, 4004)), (1008, 1120, (1008, 1120))],
)
def test_qwen_images_are_resized_as_vlmevalkits_configurations_do(
    height: int, width: int, expected: tuple[int, int]
) -> None:
    from PIL import Image

    image = Image.new("RGB", (width, height), (90, 30, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    shown = vp.prepare_image("vlmevalkit:Qwen2VLChat@e8e78f0", buffer.getvalue())
    with Image.open(io.BytesIO(shown)) as result:
        assert (result.height, result.width) == expected and result.format == "PNG"
    assert vp.prepare_image("vlmevalkit:Qwen3VLChat@e8e78f0", buffer.getvalue()) == buffer.getvalue()
    with pytest.raises(ValueError, match="200 times"):
        vp.qwen_size(10, 2500, vp.WRAPPERS["Qwen2VLChat"].image)


def test_api_wrappers_send_a_second_jpeg() -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (5000, 60), (10, 200, 30, 128)).save(buffer, format="PNG")
    with Image.open(io.BytesIO(vp.prepare_image("vlmevalkit:Claude3V", buffer.getvalue()))) as claude:
        # fitted within 4096 (5000x60 -> 4096x49), then enlarged to a 100 px short side
        assert claude.format == "JPEG" and claude.mode == "RGB" and claude.size == (8359, 100)
    with Image.open(io.BytesIO(vp.prepare_image("vlmevalkit:GPT4V", buffer.getvalue()))) as gpt:
        assert gpt.format == "JPEG" and gpt.size == (8333, 100)  # no size limit by default


#: Our tiny random-weight families (gmai_hf.testing.models) and the wrapper each gets.
TINY_FAMILIES = {
    "qwen2_vl": "Qwen2VLChat",
    "qwen2_5_vl": "Qwen2VLChat",
    "qwen3_vl": "Qwen3VLChat",
    "internvl": "InternVLChat",
    "llava": "LLaVA",
    "llava_onevision": "LLaVA_OneVision_HF",
    "gemma3": "Gemma3",
    "idefics3": "SmolVLM",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-families")
    return {name: TINY_MODELS[name](root / name) for name in TINY_FAMILIES}


@pytest.mark.parametrize("model_type", sorted(vp.MODEL_TYPES))
def test_every_known_model_type_picks_its_wrapper(tmp_path: Path, model_type: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    config = RunConfig(model=str(tmp_path), output_dir=Path("unused"))
    config.validate()
    wrapper = vp.MODEL_TYPES[model_type]
    assert config.prompt == f"vlmevalkit:{wrapper}@e8e78f0"
    assert config.max_new_tokens == vp.WRAPPERS[wrapper].max_new_tokens


def test_an_unknown_family_gets_the_datasets_prompt(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "biomedclip_vlm"}))
    config = RunConfig(model=str(tmp_path), output_dir=Path("unused"))
    config.validate()
    assert (config.prompt, config.max_new_tokens) == ("vlmevalkit-dataset", 2048)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("tiny-family-data")
    write_tsv(data / schema.VAL_FILENAME, make_rows(3, seed=5, reference_every=0))
    return data


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_a_tiny_model_run_records_its_familys_wrapper(
    tmp_path: Path, tiny: dict[str, Path], tiny_data: Path, family: str
) -> None:
    """In process, told nothing about the prompt: the checkpoint's model_type picks the wrapper."""
    out = tmp_path / "out"
    config = RunConfig(model=str(tiny[family]), output_dir=out, data_dir=str(tiny_data), max_new_tokens=2)
    assert runner.run(config) == 0
    results = json.loads((out / "results.json").read_text())
    run = results["run"]
    assert run["prompt"] == f"vlmevalkit:{TINY_FAMILIES[family]}@e8e78f0" and run["model_type"] == family
    assert results["total"] == 3 and run["failed"] == 0
    # only the generation length differs from VLMEvalKit's (we asked for 2 new tokens)
    problems = vp.comparability_problems(run)
    assert len(problems) == 1 and "max_new_tokens" in problems[0]


def test_the_server_receives_the_wrappers_text(tmp_path: Path) -> None:
    rows = make_rows(4, seed=3, reference_every=0)
    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / schema.VAL_FILENAME, rows)
    received: list[str] = []
    with FaultProxy(None, reply=lambda text: received.append(text) or "B") as server:
        config = RunConfig(
            model="served",
            backend="openai",
            output_dir=tmp_path / "out",
            data_dir=str(data),
            prompt="vlmevalkit:Qwen3VLChat",
            backend_options={"base_url": server.base_url, "concurrency": 1, "max_retries": 0},
        )
        assert runner.run(config) == 0
    presented = [protocols.present_row(row, "vlmevalkit") for row in rows]
    expected = {vp.build(row, "vlmevalkit:Qwen3VLChat")[1] for row in presented}
    assert set(received) == expected and len(received) == 4
    assert all(text.endswith("\nAnswer with the option letter only.") for text in received)
    run = json.loads((tmp_path / "out" / "results.json").read_text())["run"]
    assert run["prompt"] == "vlmevalkit:Qwen3VLChat@e8e78f0"


def test_what_the_api_and_deepseek_wrappers_change_reaches_the_server_and_the_record(tmp_path: Path) -> None:
    """GPT4V: a second JPEG with ``detail: low``; DeepSeekVL2: trailing dots stripped from answers."""
    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / schema.VAL_FILENAME, make_rows(2, seed=4, reference_every=0))
    for wrapper in ("GPT4V", "DeepSeekVL2"):
        with FaultProxy(None, reply=lambda text: "The answer is B...") as server:
            out = tmp_path / wrapper
            config = RunConfig(
                model="served",
                backend="openai",
                output_dir=out,
                data_dir=str(data),
                prompt=f"vlmevalkit:{wrapper}",
                backend_options={"base_url": server.base_url, "concurrency": 1, "max_retries": 0},
            )
            assert runner.run(config) == 0
        images = [json.loads(body)["messages"][-1]["content"][0]["image_url"] for body in server.bodies]
        predictions = [json.loads(line)["prediction"] for line in (out / "predictions.jsonl").open()]
        if wrapper == "GPT4V":
            assert [image.get("detail") for image in images] == ["low", "low"]
            assert all(image["url"].startswith("data:image/jpeg;base64,") for image in images)
            assert predictions == ["The answer is B..."] * 2
        else:
            assert [image.get("detail") for image in images] == [None, None]
            assert predictions == ["The answer is B"] * 2


def test_internvl_is_tiled_as_vlmevalkit_tiles_it(tiny: dict[str, Path]) -> None:
    """InternVLChat's ``set_max_num`` gives GMAI-MMBench at most 6 tiles plus the thumbnail."""
    from PIL import Image
    from transformers import AutoProcessor

    from gmai_hf.backends.base import Question
    from gmai_hf.backends.hf import HFPreparer

    buffer = io.BytesIO()
    Image.new("RGB", (3000, 500), (20, 90, 160)).save(buffer, format="JPEG")
    question = Question(0, "Which organ?", {"A": "x", "B": "y"}, buffer.getvalue())
    processor = AutoProcessor.from_pretrained(tiny["internvl"])
    rule = vp.WRAPPERS["InternVLChat"]
    tiled = HFPreparer(processor, None, True, dict(rule.processor_kwargs))(question)
    assert tiled.features["pixel_values"].shape[0] == 6 + 1
    plain = HFPreparer(processor, None, True)(question)  # the tiny processor's own limit: 4
    assert plain.features["pixel_values"].shape[0] == 4 + 1
    assert vp.family_of("vlmevalkit:InternVLChat@e8e78f0", "internvl")
    assert not vp.family_of("vlmevalkit:InternVLChat@e8e78f0", "llava")  # --prompt llava on LLaVA


def test_minicpms_instruction_without_options_goes_before_the_image() -> None:
    """MiniCPM's ``build_prompt`` puts it as a text item ahead of the image, not as a system turn."""
    from gmai_hf.backends.base import Question
    from gmai_hf.backends.openai import OpenAIPreparer

    assert vp.WRAPPERS["MiniCPM_V_2_6"].system_before_image
    lead, text = vp.build(BARE_ROW, "vlmevalkit:MiniCPM_V_2_6@e8e78f0")
    buffer = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    question = Question(0, text, {}, buffer.getvalue(), lead=lead)
    messages = OpenAIPreparer()(question).features["messages"]
    assert [m["role"] for m in messages] == ["user"]
    parts = messages[0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]
    assert parts[0]["text"] == "Carefully read the following question Answer the question directly."
    assert parts[2]["text"] == "Question: Which organ is shown?\n"
