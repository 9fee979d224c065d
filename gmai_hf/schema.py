"""The benchmark's vocabulary: column names, label strings and official files.

Everything downstream (builder, tree, metric, runner, reports) names columns through this
module, so the mapping from the official TSV header to our feature names lives in one place.
Facts come from ``shared/GMAI_MMBENCH.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

# --- Columns ---------------------------------------------------------------------------------

OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")

#: Tree metadata columns, by our feature name, in feature order.
TREE_COLUMNS: tuple[str, ...] = (
    "category",
    "clinical_vqa_task",
    "department",
    "perceptual_granularity",
    "modality",
    "original_task",
)

#: The three views of the lexical tree; each goes value -> modality -> category.
TREE_VIEWS: tuple[str, ...] = ("clinical_vqa_task", "department", "perceptual_granularity")

#: Dimensions the metric breaks accuracy down by.
BREAKDOWN_DIMENSIONS: tuple[str, ...] = (
    "clinical_vqa_task",
    "department",
    "perceptual_granularity",
    "modality",
    "category",
)

#: Our feature names, in the order the dataset exposes them.
FEATURE_NAMES: tuple[str, ...] = (
    "index",
    "question",
    *OPTION_LETTERS,
    "answer",
    "image",
    *TREE_COLUMNS,
)

#: Official TSV header name -> feature name (case-sensitive, as the files are written).
OFFICIAL_TO_FEATURE: dict[str, str] = {
    "index": "index",
    "question": "question",
    **{letter: letter for letter in OPTION_LETTERS},
    "answer": "answer",
    "image": "image",
    "category": "category",
    "clinical VQA task": "clinical_vqa_task",
    "department": "department",
    "perceptual granularity": "perceptual_granularity",
    "modality": "modality",
    "original task": "original_task",
}

#: Feature name -> official TSV header name (used to write files in the official format).
FEATURE_TO_OFFICIAL: dict[str, str] = {v: k for k, v in OFFICIAL_TO_FEATURE.items()}

#: Header order of the official test TSV (VAL adds ``answer``; its position is not known).
OFFICIAL_TEST_HEADER: tuple[str, ...] = (
    "index",
    "question",
    *OPTION_LETTERS,
    "image",
    "category",
    "clinical VQA task",
    "department",
    "perceptual granularity",
    "modality",
    "original task",
)

#: VLMEvalKit lower-cases every column name except single capital letters.
VLMEVALKIT_NAME: dict[str, str] = {
    feature: (official if len(official) == 1 else official.lower())
    for official, feature in OFFICIAL_TO_FEATURE.items()
}

# --- Label vocabulary --------------------------------------------------------------------------

CLINICAL_VQA_TASKS: dict[str, str] = {
    "Attribute Recognition": "AR",
    "Blood Vessels Recognition": "BVR",
    "Bone": "B",
    "Cell Recognition": "CR",
    "Counting": "C",
    "Disease Diagnosis": "DD",
    "Image Quality Grading": "IQG",
    "Microorganism Recognition": "MR",
    "Muscle": "M",
    "Nervous Tissue": "NT",
    "Organ Recognition - Abdomen": "OR-A",
    "Organ Recognition - Head and Neck": "OR-HN",
    "Organ Recognition - Pelvic": "OR-P",
    "Organ Recognition - Thorax": "OR-T",
    "Severity Grading": "SG",
    "Surgeon Action Recognition": "SAR",
    "Surgical Instrument Recognition": "SIR",
    "Surgical Workflow Recognition": "SWR",
}

DEPARTMENTS: dict[str, str] = {
    "Cardiovascular Surgery": "CS",
    "Dermatology": "D",
    "Endocrinology": "E",
    "Gastroenterology and Hepatology": "GH",
    "General Surgery": "GS",
    "Hematology": "H",
    "Infectious Diseases": "ID",
    "Laboratory Medicine and Pathology": "LMP",
    "Nephrology and Hypertension": "NH",
    "Neurosurgery": "N",
    "Obstetrics and Gynecology": "OG",
    "Oncology (Medical)": "OM",
    "Ophthalmology": "O",
    "Orthopedic Surgery": "OS",
    "Otolaryngology (ENT)/Head and Neck Surgery": "ENT/HNS",
    "Pulmonary Medicine": "PM",
    "Sports Medicine": "SM",
    "Urology": "U",
}

PERCEPTUAL_GRANULARITIES: tuple[str, ...] = ("Box level", "Contour level", "Image level", "Mask level")

#: Modality spellings beyond ``CT`` are inferred, not read from the data (see the facts file).
MODALITIES: tuple[str, ...] = (
    "CT",
    "MRI",
    "X-ray",
    "Endoscopy",
    "Fundus Photography",
    "Histopathology",
    "Dermoscopy",
    "OCT",
    "UltraSound",
    "T1 MRI",
    "T2 weighted MRI",
    "FLAIR MRI",
    "DWI MRI",
    "Colposcopy",
    "Microscopy",
)

# --- Citation ------------------------------------------------------------------------------------

CITATION = """\
@misc{chen2024gmaimmbenchcomprehensivemultimodalevaluation,
  title={GMAI-MMBench: A Comprehensive Multimodal Evaluation Benchmark Towards General Medical AI},
  author={Pengcheng Chen and Jin Ye and Guoan Wang and Yanjun Li and Zhongying Deng and Wei Li
    and Tianbin Li and Haodong Duan and Ziyan Huang and Yanzhou Su and Benyou Wang and Shaoting Zhang
    and Bin Fu and Jianfei Cai and Bohan Zhuang and Eric J Seibel and Junjun He and Yu Qiao},
  year={2024},
  eprint={2408.03361},
  archivePrefix={arXiv},
  primaryClass={eess.IV},
  url={https://arxiv.org/abs/2408.03361},
}
"""

HOMEPAGE = "https://uni-medical.github.io/GMAI-MMBench.github.io/"

# --- Official files ----------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("validation", "test")

VAL_FILENAME = "GMAI-MMBench_VAL.tsv"
VAL_REPO = "VLMEval/GMAI-MMBench"
VAL_MD5 = "254bd581627866f1c499d3d6b4422324"
#: Other names VAL is published under (OpenGVLab's repo holds the same bytes under this name).
VAL_ALIASES: tuple[str, ...] = ("GMAI_mm_bench_VAL.tsv",)
#: Questions in the official VAL file (indices 0..4549).
VAL_QUESTIONS = 4550

TEST_PARTS: int = 11
TEST_REPO = "OpenGVLab/GMAI-MMBench"  # gated: the user must accept its terms and pass a token


def test_filename(part: int) -> str:
    """Official name of test part ``part`` (1-based)."""
    return f"GMAI_mm_bench_TEST_part_{part}.tsv"


def test_filename_renamed(part: int) -> str:
    """Name some third parties give test part ``part``."""
    return f"GMAI-MMBench_TEST_part_{part}.tsv"


TEST_MD5: dict[int, str] = {
    1: "900d735231230a63f4ed45665c078ef4",
    2: "1b27ab621386945d7e4a765ad2d22b0e",
    3: "44bdc2b6267dd505d529b8cad06f0fb2",
    4: "5a04a04fcac9f1466709f242fdb80acb",
    5: "c70baf8909eda9af0ddeab275c721336",
    6: "825abc39596b644dead9350d0cfa3b96",
    7: "defb8aed2fb77365a76b6b9abd6a2701",
    8: "ff490d60b85f2bb0abb67a435b298c65",
    9: "ff67c86f40da93b09139ac1d1ba5dc6b",
    10: "3dae94627b9ac0fe00180d4780fbf6dc",
    11: "d08dc813f0eb6bbab63cae2a9d113c4b",
}

#: The image formats found in the files, by their first bytes (WebP is recognised apart: RIFF....WEBP).
IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def image_kind(data: bytes) -> str | None:
    """The format of an image file's bytes (``PNG``, ``JPEG``, ``GIF``, ``BMP``, ``TIFF``, ``WEBP``), or
    None when they are not one of them."""
    for magic, kind in IMAGE_MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def preview_indices(indices: Sequence[int], shown: int = 5) -> str:
    """The first question indices of a list, for an error message: ``3, 8, 12, ...``."""
    return ", ".join(map(str, indices[:shown])) + (", ..." if len(indices) > shown else "")


#: An ``image`` field this short is the ``index`` of another row holding the same image.
IMAGE_REFERENCE_MAX_CHARS = 64


def options_beyond(header: Sequence[str]) -> list[str]:
    """Header names that look like option letters after E (``F``...``Z``): not read here, but
    VLMEvalKit shows every single-capital-letter column as an option, so a file with them is no
    GMAI-MMBench file as we know it."""
    return [name for name in header if len(name) == 1 and "F" <= name <= "Z"]
