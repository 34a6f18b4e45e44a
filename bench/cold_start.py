"""Start-up costs of the ``geosleuth`` command, each in a new process, as a shell loop or an MCP client sees them.

    .venv/bin/python bench/cold_start.py [--repeats 5] [--fresh-repeats 2] [--photo tests/fixtures/sign_fr_paris.jpg]

Reports the median and the 90th percentile wall seconds of:

* ``--version``;
* ``locate PHOTO --json --offline`` with a warm cache (the gazetteer already built);
* the same with a fresh, empty cache directory (``GEOSLEUTH_CACHE_DIR=$(mktemp -d)``): the first
  run after an install, which builds the gazetteer and packs the land/ocean grid.

The cold-start cost is ``fresh - warm``: what the first run pays beyond the photo's own work. Timings on a
shared machine are noisy: compare medians of runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(args: list[str], cache_dir: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run; CPU is the steadier number on a
    shared machine."""
    env = {**os.environ, "GEOSLEUTH_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geosleuth.cli", *args], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def summary(runs: list[tuple[float, float]]) -> dict[str, float]:
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    return {
        "median_s": round(statistics.median(wall), 3),
        "p90_s": round(percentile(wall, 0.9), 3),
        "cpu_median_s": round(statistics.median(cpu), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="runs of --version and of the warm locate")
    ap.add_argument("--fresh-repeats", type=int, default=2, help="runs with a fresh cache (each builds)")
    ap.add_argument("--photo", type=Path, default=ROOT / "tests" / "fixtures" / "sign_fr_paris.jpg")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    locate = ["locate", str(args.photo), "--json", "--offline"]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="geosleuth-bench-") as tmp:
        fresh = []
        for i in range(args.fresh_repeats):
            fresh.append(timed(locate, Path(tmp) / f"fresh{i}"))
        warm_dir = Path(tmp) / "fresh0" if fresh else Path(tmp) / "warm"
        warm = [timed(locate, warm_dir) for _ in range(args.repeats)]
        version = [timed(["--version"], warm_dir) for _ in range(args.repeats)]
    results["version"] = summary(version)
    results["warm_locate"] = summary(warm)
    if fresh:
        results["fresh_locate"] = summary(fresh)
        results["cold_start_extra"] = {
            key: round(results["fresh_locate"][key] - results["warm_locate"][key], 3)
            for key in ("median_s", "cpu_median_s")
        }
    for name, row in results.items():
        print(f"{name:18s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
