"""The README's Python examples run as written (from the repository root), so they stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_blocks_run(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3, "the README lost its dataset, tree and metric examples"
    monkeypatch.chdir(ROOT)  # evaluate.load("metrics/gmai_mmbench") is a path from the root
    namespace: dict[str, object] = {}
    for block in blocks:  # later blocks build on earlier ones (val -> select)
        exec(compile(block, "README.md", "exec"), namespace)
    results = namespace["results"]
    assert (results["correct"], results["total"], results["unmatched"]) == (3, 4, 1)  # "I cannot tell"
    assert results["accuracy"] == 0.75
    assert set(namespace["derm"]["department"]) <= {"Dermatology"}
