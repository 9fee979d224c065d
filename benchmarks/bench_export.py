"""The Parquet export against the TSV path: throughput, size, time to a first question, run start.

Generates one large synthetic ``GMAI-MMBench_VAL.tsv`` (noise images of a realistic size, as
``bench_prepare.py`` does), then measures, each step in a fresh subprocess (wall time, peak RSS):

- ``prepare``: building the Arrow cache from the TSV (what every TSV user pays once);
- ``export``: ``gmai-hf export`` from that cache to Parquet (ratio to ``prepare``);
- sizes: the Parquet shards against the TSV;
- ``first question (streaming)``: ``load_dataset(EXPORT, streaming=True)`` to the first row, against
  the TSV builder's streaming;
- ``run start``: ``gmai-hf run --model random --limit 1`` on each form, with a cold cache (first
  use) and a warm one, to its first answer.

Usage: ``python benchmarks/bench_export.py [--size-mb 1024] [--image-px 600] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_prepare import ensure_tsv, measure_in_subprocess, resource_usage

STEPS = ("prepare", "export", "stream-tsv", "stream-export", "run-tsv", "run-export")


def measure(step: str, data_dir: Path, export_dir: Path, cache: Path) -> dict[str, float]:
    """One step in this process (run in a fresh subprocess per step)."""
    os.environ["HF_DATASETS_CACHE"] = str(cache)
    import datasets

    datasets.disable_progress_bars()
    start = time.perf_counter()
    if step == "prepare":
        from gmai_hf import load_split

        rows = len(load_split("validation", data_dir))
    elif step == "export":
        from gmai_hf import export

        export.export(export_dir, data_dir=data_dir, splits=["validation"])
        rows = 0
    elif step.startswith("stream"):
        import gmai_hf

        source = str(export_dir) if step == "stream-export" else "gmai_mmbench"
        kwargs = {} if step == "stream-export" else {"data_dir": str(data_dir), "name": "validation"}
        stream = datasets.load_dataset(source, split="validation", streaming=True, **kwargs)
        rows = sum(1 for _ in stream.take(1))
        assert gmai_hf  # imported for the TSV builder's name
    else:
        from gmai_hf import runner

        form = {"data_dir": str(data_dir)} if step == "run-tsv" else {"dataset": str(export_dir)}
        out = Path(tempfile.mkdtemp(prefix="bench-run-"))
        config = runner.RunConfig(model="random", output_dir=out, limit=1, **form)
        if runner.run(config) != 0:
            raise RuntimeError(f"{step} failed")
        rows = 1
        shutil.rmtree(out)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "peak_rss_mb": resource_usage()["peak_rss_mb"]}


def _run(step: str, data_dir: Path, export_dir: Path, cache: Path) -> dict[str, float]:
    return measure_in_subprocess(__file__, [step, "--_dirs", str(data_dir), str(export_dir), str(cache)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--image-px", type=int, default=600)
    parser.add_argument("--workdir")
    parser.add_argument("--_measure", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--_dirs", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(measure(args._measure, *map(Path, args._dirs))), flush=True)
        # a Parquet stream left unfinished can hang the interpreter's shutdown (apache/arrow#45214,
        # seen with pyarrow 26 here): the measurement is printed, skip the shutdown
        os._exit(0)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-export-"))
    data_dir, export_dir = work / "data", work / "export"
    tsv = ensure_tsv(data_dir, args.size_mb, args.image_px)
    shutil.rmtree(export_dir, ignore_errors=True)
    cold, warm = work / "cache-cold", work / "cache"
    shutil.rmtree(warm, ignore_errors=True)
    results = {}
    results["prepare"] = _run("prepare", data_dir, export_dir, warm)
    results["export"] = _run("export", data_dir, export_dir, warm)
    for step in ("stream-tsv", "stream-export"):
        results[step] = _run(step, data_dir, export_dir, warm)
    for step in ("run-tsv", "run-export"):
        shutil.rmtree(cold, ignore_errors=True)
        results[f"{step} (cold cache)"] = _run(step, data_dir, export_dir, cold)
        results[f"{step} (warm cache)"] = _run(step, data_dir, export_dir, cold)
    parquet = sum(path.stat().st_size for path in (export_dir / "data").glob("*.parquet"))
    size = tsv.stat().st_size
    ratio = parquet / size
    print(f"TSV {size / 1e6:.0f} MB; Parquet {parquet / 1e6:.0f} MB ({ratio:.2f}x the TSV)", end="")
    print(f"; {os.cpu_count()} CPUs")
    print(f"{'step':<28} {'seconds':>8} {'peak MB':>8}  ratio")
    seconds = {step: result["seconds"] for step, result in results.items()}
    ratios = {
        "export": f"{seconds['export'] / seconds['prepare']:.2f}x prepare",
        "stream-export": f"{seconds['stream-export'] / seconds['stream-tsv']:.2f}x TSV streaming",
    }
    for form in ("cold", "warm"):
        tsv_start = results[f"run-tsv ({form} cache)"]["seconds"]
        ratios[f"run-export ({form} cache)"] = (
            f"{results[f'run-export ({form} cache)']['seconds'] / tsv_start:.2f}x TSV"
        )
    for step, result in results.items():
        print(f"{step:<28} {result['seconds']:>8.2f} {result['peak_rss_mb']:>8.0f}  {ratios.get(step, '')}")
    print(f"(load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    if not args.workdir:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
