"""Print the versions this environment runs with, and fail if any differs from .ci/constraints.txt."""

import re
import sys
from importlib import metadata
from pathlib import Path

pins = {}
for line in (Path(__file__).parent / "constraints.txt").read_text().splitlines():
    found = re.match(r"^([A-Za-z0-9_.\-]+)==([^,\s]+)", line)
    if found:
        pins[re.sub(r"[-_.]+", "-", found[1]).lower()] = found[2]
wrong = []
for name, version in sorted(pins.items()):
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        installed = None
    if installed != version:
        wrong.append(f"{name} {installed} (pinned {version})")
key = ("torch", "torchvision", "transformers", "datasets", "evaluate", "accelerate", "huggingface-hub")
print("versions:", ", ".join(f"{name} {metadata.version(name)}" for name in key))
print(f"{len(pins) - len(wrong)} of {len(pins)} pinned packages installed at their pinned versions")
if wrong:
    sys.exit("not as pinned: " + "; ".join(wrong))
