"""Per-wrapper VLMEvalKit prompts for GMAI-MMBench: the texts below are facts read from VLMEvalKit's
source at e8e78f0 (each wrapper's ``build_prompt`` for an MCQ dataset), not produced by its code."""

from __future__ import annotations

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
    "llama_vision": ((None, DATASET_EN), EXPECTED_DATASET_CN, BARE_DATASET),
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
    assert "--max-new-tokens 128" in vp.comparability_problems(llama)[0]
    assert vp.comparability_problems({**llama, "max_new_tokens": 128}) == []
    qwen = {"prompt": "vlmevalkit:Qwen2VLChat@e8e78f0", "model_type": "qwen2_5_vl", "backend": "transformers"}
    assert "min_pixels" in vp.comparability_problems(qwen)[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-families")
    names = ("qwen2_5_vl", "qwen3_vl", "internvl", "llava", "llava_onevision")
    return {name: TINY_MODELS[name](root / name) for name in names}


@pytest.mark.parametrize(
    ("family", "wrapper"),
    [
        ("qwen2_5_vl", "Qwen2VLChat"),
        ("qwen3_vl", "Qwen3VLChat"),
        ("internvl", "InternVLChat"),
        ("llava", "LLaVA"),
        ("llava_onevision", "LLaVA_OneVision_HF"),
    ],
)
def test_the_family_is_picked_from_the_checkpoint(tiny: dict[str, Path], family: str, wrapper: str) -> None:
    config = RunConfig(model=str(tiny[family]), output_dir=Path("unused"))
    config.validate()
    assert config.prompt == f"vlmevalkit:{wrapper}@e8e78f0" and config.model_type == family


def test_tiny_qwen2_5_vl_run_records_its_wrapper(tmp_path: Path, tiny: dict[str, Path]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / schema.VAL_FILENAME, make_rows(3, seed=5, reference_every=0))
    config = RunConfig(model=str(tiny["qwen2_5_vl"]), output_dir=tmp_path / "out", data_dir=str(data))
    config.max_new_tokens = 2
    assert runner.run(config) == 0
    run = json.loads((tmp_path / "out" / "results.json").read_text())["run"]
    assert run["prompt"] == "vlmevalkit:Qwen2VLChat@e8e78f0" and run["model_type"] == "qwen2_5_vl"


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
