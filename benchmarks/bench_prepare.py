"""Preparing a split vs. reading the same TSV the usual ways: wall time, peak RSS, MB/s.

Generates one large synthetic ``GMAI-MMBench_VAL.tsv`` (noise images of a realistic size, so the
base64 fields are as large and incompressible as real scans), then measures, each in a fresh
subprocess on that same file:

- ``loop``: a bare Python loop reading it with the ``csv`` module and base64-decoding each image
  (the floor any reader must pay; the speed target is <= 1.5x this);
- ``pandas``: ``pandas.read_csv(sep="\\t")``, what VLMEvalKit does;
- ``ours-1`` / ``ours-2``: ``load_dataset("gmai_mmbench", ...)`` preparing the Arrow cache with
  ``num_proc`` 1 and 2 (fresh cache each time).

Usage: ``python benchmarks/bench_prepare.py [--size-mb 1024] [--image-px 600] [--workdir DIR] [--repeat N]``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("loop", "pandas", "ours-1", "ours-2")


def generate(path: Path, size_mb: int, image_px: int) -> int:
    """Write rows until the file reaches ``size_mb``; returns the number of rows."""
    from gmai_hf.testing.data import iter_rows, write_tsv

    target = size_mb * 1024 * 1024
    probe = next(iter_rows(1, image_size=image_px, reference_every=0))
    rows = max(1, round(target / (len(probe["image"]) + 300)))
    # 16 distinct noise images, each ~1.4 MB of base64 at 600 px; no image references.
    write_tsv(path, iter_rows(rows, image_size=image_px, distinct_images=16, reference_every=0))
    return rows


def resource_usage() -> dict[str, float]:
    """Peak RSS (largest of this process and its children) and CPU seconds (all of them)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "peak_rss_mb": max(own.ru_maxrss, children.ru_maxrss) / 1024,  # Linux reports KiB
        "cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
    }


def ensure_tsv(data_dir: Path, size_mb: int, image_px: int) -> Path:
    """The synthetic VAL file of about ``size_mb`` in ``data_dir`` (made if missing or smaller), read
    once so that every measurement finds it in the page cache."""
    from gmai_hf import schema  # here, not at the top: measurements import nothing they don't need

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / schema.VAL_FILENAME
    if not path.exists() or path.stat().st_size < size_mb * 1024 * 1024 * 0.9:
        print(f"generating {size_mb} MB TSV in {path} ...", flush=True)
        generate(path, size_mb, image_px)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    return path


def measure_in_subprocess(script: str, arguments: list[str]) -> dict[str, float]:
    """``script --_measure ...`` in a fresh, offline Python: its last printed line, as JSON."""
    out = subprocess.run(
        [sys.executable, script, "--_measure", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    if out.returncode:
        raise RuntimeError(f"{arguments[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(method: str, path: Path) -> dict[str, float]:
    """Run one method on ``path`` in this process; called in a fresh subprocess per method."""
    if method == "loop":
        import base64

        csv.field_size_limit(sys.maxsize)
        start = time.perf_counter()
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter="\t")
            image = next(reader).index("image")
            rows = 0
            for rows, row in enumerate(reader, start=1):  # noqa: B007 (rows is the count)
                if len(row[image]) > 64:
                    base64.b64decode(row[image])
    elif method == "pandas":
        import pandas

        start = time.perf_counter()
        rows = len(pandas.read_csv(path, sep="\t"))
    else:
        import datasets

        import gmai_hf  # noqa: F401

        datasets.disable_progress_bars()
        cache = tempfile.mkdtemp(prefix="bench-cache-", dir=path.parent)
        start = time.perf_counter()
        ds = datasets.load_dataset(
            "gmai_mmbench",
            "validation",
            data_dir=str(path.parent),
            split="validation",
            cache_dir=cache,
            num_proc=int(method.split("-")[1]),
        )
        rows = len(ds)
        elapsed = time.perf_counter() - start
        shutil.rmtree(cache)
        return {"seconds": elapsed, "rows": rows, **resource_usage()}
    return {"seconds": time.perf_counter() - start, "rows": rows, **resource_usage()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the generated TSV (default 1024)")
    parser.add_argument("--image-px", type=int, default=600, help="side of the noise images (600: ~1 MB PNG)")
    parser.add_argument("--workdir", help="where to write the TSV (default: a temporary folder, removed)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds over all methods; the best time is kept"
    )
    parser.add_argument("--_measure", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(measure(args._measure, Path(args._file))))
        return 0

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-prepare-"))
    path = ensure_tsv(workdir / "data", args.size_mb, args.image_px)
    size_mb = path.stat().st_size / 1e6
    print(f"file: {size_mb:.0f} MB, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")

    results: dict[str, dict[str, float]] = {}
    for round_ in range(args.repeat):
        for method in args.methods:
            try:
                result = measure_in_subprocess(__file__, [method, "--_file", str(path)])
            except RuntimeError as error:
                print(error)
                return 1
            print(f"  round {round_ + 1} {method}: {result['seconds']:.2f} s", flush=True)
            if method not in results or result["seconds"] < results[method]["seconds"]:
                results[method] = result

    base = results.get("loop", {}).get("seconds")
    print(f"\n{'method':<8} {'rows':>6} {'wall s':>8} {'CPU s':>7} {'MB/s':>7} {'peak MB':>8} {'x loop':>7}")
    for method, r in results.items():
        ratio = f"{r['seconds'] / base:.2f}" if base else "-"
        print(
            f"{method:<8} {r['rows']:>6} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.2f} "
            f"{size_mb / r['seconds']:>7.0f} {r['peak_rss_mb']:>8.0f} {ratio:>7}"
        )
    print(f"(best of {args.repeat}; load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    if not args.workdir:
        shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
