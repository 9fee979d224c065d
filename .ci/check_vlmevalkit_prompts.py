"""Check ``--prompt vlmevalkit:<Wrapper>`` against VLMEvalKit's own code, wrapper by wrapper.

For every wrapper in :data:`gmai_hf.vlmevalkit_prompts.WRAPPERS` this runs, on the same TSV rows:

- VLMEvalKit's side, as its ``inference.py`` does: the wrapper's ``use_custom_prompt`` and
  ``build_prompt``, or the GMAI-MMBench dataset's ``build_prompt`` where the wrapper has no custom
  prompt, on rows read with pandas as VLMEvalKit reads the TSV;
- our side, end to end: a real ``--backend openai`` run of gmai-hf on the same TSV against a
  scripted server (:class:`gmai_hf.testing.proxy.FaultProxy`) that records every request body,

and compares the user text the server received with VLMEvalKit's text (and, where VLMEvalKit's
wrapper sets one, the system prompt). The rows are the bundled sample's validation questions plus
edge rows: Chinese text, two options, stray whitespace, no options (English and Chinese).

The wrappers are built without their ``__init__`` (no weights): the attributes ``__init__`` sets
to literals (``self.x = '...'``, ``self.x = kwargs.pop('x', '...')``, a parameter's default) are
read from its source and set. VLMEvalKit's package ``__init__`` files (which import every model
and dataset) are not run, and the third-party modules its files import that are not installed are
stubbed. Run it by hand, with a checkout of VLMEvalKit (no GPU, no network)::

    python .ci/check_vlmevalkit_prompts.py --vlmevalkit /path/to/VLMEvalKit [--wrapper Qwen2VLChat ...]

It exits 1 when any text differs.
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib
import importlib.abc
import importlib.machinery
import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parents[1]
DATASET_NAME = "GMAI-MMBench_VAL"

#: VLMEvalKit module of each wrapper class.
MODULES = {
    "Qwen2VLChat": "vlmeval.vlm.qwen2_vl.model",
    "Qwen3VLChat": "vlmeval.vlm.qwen3_vl.model",
    "LLaVA": "vlmeval.vlm.llava.llava",
    "LLaVA_Next": "vlmeval.vlm.llava.llava",
    "LLaVA_OneVision_HF": "vlmeval.vlm.llava.llava",
    "InternVLChat": "vlmeval.vlm.internvl.internvl_chat",
    "MiniCPM_V_2_6": "vlmeval.vlm.minicpm_v",
    "IDEFICS2": "vlmeval.vlm.idefics",
    "SmolVLM": "vlmeval.vlm.smolvlm",
    "Gemma3": "vlmeval.vlm.gemma",
    "llama_vision": "vlmeval.vlm.llama_vision",
    "Phi3Vision": "vlmeval.vlm.phi3_vision",
    "Phi4Multimodal": "vlmeval.vlm.phi4_multimodal",
    "molmo": "vlmeval.vlm.molmo",
    "Ovis2": "vlmeval.vlm.ovis.ovis",
    "DeepSeekVL2": "vlmeval.vlm.deepseek_vl2",
    "GPT4V": "vlmeval.api.gpt",
    "Gemini": "vlmeval.api.gemini",
    "Claude3V": "vlmeval.api.claude",
}

#: Attributes ``__init__`` computes from the loaded model, set here to the value for the model named.
#: Ovis2: ``self.size`` from the checkpoint's layer count (Ovis2-8B); ``self.use_cot`` is keyed by it.
COMPUTED = {"Ovis2": {"size": "8B"}}

#: Names a module uses but no longer imports: VLMEvalKit's lint commit 401916c0 (2026-03-25) replaced
#: ``from ...smp import *`` in ovis.py by two names, so ``Ovis2.build_prompt`` raises NameError on an
#: MCQ dataset ever since; given back here (what the star import gave) to check the text it builds.
RESTORED = {"vlmeval.vlm.ovis.ovis": {"string": "string", "pd": "pandas"}}

#: Edge rows appended to the sample's (options missing are empty cells, as in the official TSVs).
EDGE_ROWS = [
    {"question": "这张图像显示的是哪种器官？", "A": "肝脏", "B": "肾脏", "C": "脾脏", "D": "", "E": ""},
    {"question": "Is the lesion benign?", "A": "yes", "B": "no", "C": "", "D": "", "E": ""},
    {"question": "  Which modality\nwas used?  ", "A": "CT", "B": "MRI", "C": "X-ray", "D": "PET", "E": ""},
    {"question": "Describe the abnormality.", "A": "", "B": "", "C": "", "D": "", "E": ""},
    {"question": "请描述图像中的异常。", "A": "", "B": "", "C": "", "D": "", "E": ""},
]


# --- VLMEvalKit's side ------------------------------------------------------------------------


class _Stub(types.ModuleType):
    """A module that is not installed: every attribute is a :class:`_StubObject`."""

    __path__: ClassVar[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubObject


class _StubMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubObject


class _StubObject(metaclass=_StubMeta):
    """Anything: a base class, a decorator, a function's result."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if len(args) == 1 and callable(args[0]) else _StubObject()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubObject()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stubs a module a VLMEvalKit file imports when it is not installed (only theirs: other
    packages probe optional modules with ``try: import``, which must keep failing)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.stubbed: set[str] = set()

    def _imported_by_vlmevalkit(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if not name.startswith("<frozen") and "/importlib/" not in name:
                return name.startswith(self.root)
            frame = frame.f_back
        return False

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        top = fullname.split(".")[0]
        if top in sys.stdlib_module_names or top.startswith("_") or not self._imported_by_vlmevalkit():
            return None
        for finder in sys.meta_path:
            if finder is not self and _spec(finder, fullname, path, target) is not None:
                return None
        self.stubbed.add(fullname)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> types.ModuleType:
        return _Stub(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _spec(finder: Any, fullname: str, path: Any, target: Any) -> Any:
    try:
        return finder.find_spec(fullname, path, target)
    except (AttributeError, ImportError, ValueError):
        return None


def load_vlmevalkit(checkout: Path) -> tuple[type, _StubFinder]:
    """Make ``vlmeval``'s modules importable without running its package ``__init__`` files;
    VLMEvalKit's GMAI-MMBench dataset class."""
    package = checkout / "vlmeval"
    finder = _StubFinder(package)
    sys.meta_path.append(finder)
    sys.path.insert(0, str(checkout))
    for name, sub in (
        ("vlmeval", ""),
        ("vlmeval.vlm", "vlm"),
        ("vlmeval.api", "api"),
        ("vlmeval.dataset", "dataset"),
    ):
        module = types.ModuleType(name)
        module.__path__ = [str(package / sub)]
        sys.modules[name] = module
    datasets_module = sys.modules["vlmeval.dataset"]

    def dataset_type(dataset: str, *, default: str | None = "MCQ") -> str | None:
        # ``DATASET_TYPE``: the TYPE of the dataset class that lists the name (GMAIMMBenchDataset's)
        from vlmeval.dataset.image_mcq import GMAIMMBenchDataset

        return GMAIMMBenchDataset.TYPE if dataset in GMAIMMBenchDataset.DATASET_URL else default

    datasets_module.DATASET_TYPE = dataset_type  # type: ignore[attr-defined]
    datasets_module.DATASET_MODALITY = lambda dataset, *, default="IMAGE": default  # type: ignore[attr-defined]
    from vlmeval.dataset.image_mcq import GMAIMMBenchDataset

    return GMAIMMBenchDataset, finder


def _literal(node: ast.AST, defaults: dict[str, Any]) -> tuple[bool, Any]:
    """(found, value) of an ``__init__`` assignment's right-hand side, where it is a constant."""
    if isinstance(node, ast.Name) and node.id in defaults:
        return True, defaults[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("pop", "get")
        and len(node.args) == 2
    ):
        return _literal(node.args[1], defaults)
    try:
        return True, ast.literal_eval(node)
    except ValueError:
        return False, None


def make_wrapper(cls: type, name: str) -> Any:
    """An instance of a VLMEvalKit wrapper without its ``__init__``, with the literal attributes
    every ``__init__`` in its class hierarchy sets (read from their source)."""
    model = cls.__new__(cls)
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or not hasattr(init, "__code__"):
            continue
        signature = inspect.signature(init)
        defaults = {
            key: p.default
            for key, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        if "use_custom_prompt" in defaults:  # the prompt mixins keep it as ``_use_custom_prompt``
            model._use_custom_prompt = defaults["use_custom_prompt"]
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    found, value = _literal(node.value, defaults)
                    if found:
                        setattr(model, target.attr, value)
    for key, value in COMPUTED.get(name, {}).items():
        setattr(model, key, value)
    model.dump_image = lambda line, dataset=None: ["/tmp/question.jpg"]
    model.dump_image_func = model.dump_image
    return model


def vlmevalkit_message(model: Any, dataset: Any, row: Any) -> tuple[bool, list[dict[str, Any]]]:
    """(whether the wrapper's own prompt was used, the message) as VLMEvalKit's inference builds it."""
    if getattr(dataset, "force_use_dataset_prompt", False):
        return False, dataset.build_prompt(row)
    if hasattr(model, "use_custom_prompt") and model.use_custom_prompt(DATASET_NAME):
        return True, model.build_prompt(row, dataset=DATASET_NAME)
    return False, dataset.build_prompt(row)


# --- our side ---------------------------------------------------------------------------------


def check_data(folder: Path) -> Path:
    """The sample's validation TSV plus the edge rows (their image borrowed from the first row)."""
    import csv

    from gmai_hf import schema

    source = REPO / "gmai_hf" / "sample" / schema.VAL_FILENAME
    csv.field_size_limit(sys.maxsize)
    with source.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    template = rows[0]
    top = max(int(row["index"]) for row in rows)
    for offset, edge in enumerate(EDGE_ROWS, start=1):
        rows.append({**template, **edge, "index": str(top + offset), "answer": "A"})
    target = folder / schema.VAL_FILENAME
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(template), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return target


def what_the_server_receives(data_dir: Path, wrapper: str, out: Path) -> list[tuple[str | None, str]]:
    """(system, user text) of every request a ``--backend openai`` run under the wrapper sends."""
    from gmai_hf import runner
    from gmai_hf.testing.proxy import FaultProxy

    with FaultProxy(None, reply=lambda text: "A") as server:
        config = runner.RunConfig(
            model="check",
            backend="openai",
            output_dir=out,
            data_dir=str(data_dir),
            prompt=f"vlmevalkit:{wrapper}",
            max_new_tokens=4,
            backend_options={"base_url": server.base_url, "concurrency": 4, "max_retries": 0},
        )
        if runner.run(config) != 0:
            raise RuntimeError(f"the gmai-hf run under vlmevalkit:{wrapper} failed; see {out}")
    received = []
    for body in server.bodies:
        messages = json.loads(body)["messages"]
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        texts = [part["text"] for part in messages[-1]["content"] if part.get("type") == "text"]
        received.append((system, "\n".join(texts)))
    return received


# --- the comparison ---------------------------------------------------------------------------


def commit_of(checkout: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return None
    return result.stdout.strip() or None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlmevalkit", type=Path, required=True, help="a checkout of VLMEvalKit")
    parser.add_argument("--wrapper", action="append", help="check only these wrappers (default: all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    import pandas as pd

    from gmai_hf import vlmevalkit_prompts

    commit = commit_of(args.vlmevalkit)
    print(f"VLMEvalKit checkout {args.vlmevalkit} at {commit or 'an unknown commit'}")
    if commit and not vlmevalkit_prompts.VLMEVALKIT_COMMIT.startswith(commit[:7]):
        print(f"warning: our rules were read at {vlmevalkit_prompts.VLMEVALKIT_COMMIT}")
    dataset_class, finder = load_vlmevalkit(args.vlmevalkit.resolve())
    dataset = dataset_class.__new__(dataset_class)
    dataset.dataset_name = DATASET_NAME
    dataset.meta_only = False
    dataset.dump_image = lambda line: ["/tmp/question.jpg"]

    wrappers = args.wrapper or list(vlmevalkit_prompts.WRAPPERS)
    unknown = [name for name in wrappers if name not in MODULES]
    if unknown:
        parser.error(f"no VLMEvalKit module known for {unknown}: add them to MODULES")
    mismatches = 0
    summary = []
    with tempfile.TemporaryDirectory(prefix="gmai-hf-check-") as scratch:
        tsv = check_data(Path(scratch))
        rows = [row for _, row in pd.read_csv(tsv, sep="\t").iterrows()]  # as VLMEvalKit's load() reads it
        for name in wrappers:
            module = importlib.import_module(MODULES[name])
            for missing, source in RESTORED.get(MODULES[name], {}).items():
                if not hasattr(module, missing):
                    print(f"note: {MODULES[name]} uses {missing!r} without importing it; given {source}")
                    setattr(module, missing, importlib.import_module(source))
            cls = getattr(module, name)
            model = make_wrapper(cls, name)
            rule = vlmevalkit_prompts.WRAPPERS[name]
            theirs: list[tuple[str | None, str]] = []
            custom = set()
            for row in rows:
                own, message = vlmevalkit_message(model, dataset, row)
                custom.add(own)
                texts = [item["value"] for item in message if item["type"] == "text"]
                texts[-1] = texts[-1].strip() if rule.strip else texts[-1]
                # every text item, in order (MiniCPM puts an instruction before the image)
                theirs.append((getattr(model, "system_prompt", None) or None, "\n".join(texts)))
            ours = what_the_server_receives(Path(scratch), name, Path(scratch) / name)
            ours_count = collections.Counter(text for _, text in ours)
            theirs_count = collections.Counter(text for _, text in theirs)
            differ = [("VLMEvalKit", text) for text in (theirs_count - ours_count).elements()]
            differ += [("gmai-hf", text) for text in (ours_count - theirs_count).elements()]
            for side, text in differ:
                print(f"MISMATCH {name}: text only {side} has: {text!r}")
            # a system prompt VLMEvalKit's wrapper sets must be what we send
            their_systems = {system for system, _ in theirs if system}
            our_systems = {system for system, _ in ours}
            if their_systems and their_systems != our_systems:
                differ.append(("system", their_systems))
                print(f"MISMATCH {name}: system prompt VLMEvalKit {their_systems!r}, gmai-hf {our_systems!r}")
            mismatches += len(differ)
            identical = sum((ours_count & theirs_count).values())
            how = {True: "wrapper's build_prompt", False: "dataset's build_prompt"}
            source = " + ".join(how[flag] for flag in sorted(custom, reverse=True))
            if rule.strip:
                source += ", stripped as generate_inner does"
            system_note = ", ".join(repr(s) for s in sorted(our_systems, key=str) if s) or "-"
            checked = "checked" if their_systems else "not set by build_prompt or an attribute"
            summary.append((name, len(rows), identical, source, f"{system_note} ({checked})"))
    print(f"\n{'wrapper':<20} {'rows':>5} {'identical':>9}  VLMEvalKit used; our system prompt")
    for name, total, identical, source, system in summary:
        print(f"{name:<20} {total:>5} {identical:>9}  {source}; {system}")
    print(f"\nstubbed modules (not installed): {', '.join(sorted(finder.stubbed)) or 'none'}")
    print("all identical" if not mismatches else f"{mismatches} text(s) differ")
    sys.stdout.flush()
    return 1 if mismatches else 0


if __name__ == "__main__":
    # os._exit: a stubbed module must not run in other packages' exit handlers
    os._exit(main())
