"""explorer.html at the full VAL split's size: 4,550 synthetic questions, 5 runs beside 1 run of the
random model. Prints, for each page, the time from navigation to interactive (``window.explorerReady``)
in headless Chromium (Debian's, driven by Playwright) and the size of the page and its images.

    .venv/bin/python benchmarks/bench_explorer.py [--image-size 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from playwright.sync_api import sync_playwright

from gmai_hf.testing.data import write_benchmark

QUESTIONS = 4550
RUNS = 5


def gmai_hf(*args: str | Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gmai_hf.cli", *map(str, args)], check=True, capture_output=True)
    return time.perf_counter() - start


def size_mb(folder: Path) -> float:
    files = [folder / "explorer.html", *(folder / "explorer").glob("*")]
    return sum(f.stat().st_size for f in files if f.is_file()) / 1e6


def interactive_s(browser, page_path: Path, repeats: int = 3) -> float:
    """The best of ``repeats`` fresh page loads: navigation start to ``window.explorerReady``."""
    best = float("inf")
    for _ in range(repeats):
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(page_path.as_uri())
        page.wait_for_function("window.explorerReady === true", polling=10)
        best = min(best, time.perf_counter() - start)
        page.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64, help="side of the synthetic images (px)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_benchmark(root / "data", n_val=QUESTIONS, test_parts=(), image_size=args.image_size)
        runs = [root / f"run{seed}" for seed in range(RUNS)]
        for seed, run in enumerate(runs):
            gmai_hf("run", "--model", "random", "--data-dir", data, "--seed", seed, "--output-dir", run)
        write_1 = gmai_hf("report", runs[0], "--output-dir", root / "one")
        write_5 = gmai_hf("report", *runs, "--output-dir", root / "five")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            one, five = (
                interactive_s(browser, root / "one" / "explorer.html"),
                interactive_s(browser, root / "five" / "explorer.html"),
            )
            browser.close()
        print(f"{QUESTIONS} questions, synthetic {args.image_size} px images")
        print(f"{'':24}{'1 run':>10}{f'{RUNS} runs':>10}{'ratio':>8}")
        print(f"{'interactive (s)':24}{one:10.2f}{five:10.2f}{five / one:8.2f}")
        print(f"{'page + images (MB)':24}{size_mb(root / 'one'):10.1f}{size_mb(root / 'five'):10.1f}")
        print(
            f"{'page alone (MB)':24}{(root / 'one' / 'explorer.html').stat().st_size / 1e6:10.1f}"
            f"{(root / 'five' / 'explorer.html').stat().st_size / 1e6:10.1f}"
        )
        print(f"{'gmai-hf report (s)':24}{write_1:10.1f}{write_5:10.1f}")


if __name__ == "__main__":
    main()
