"""Harness throughput against the local OpenAI-compatible test server with simulated latency.

Each image goes through the whole pipeline (load, EXIF, verify; OCR off so the VLM is the only
wait) with one VLM request of ``--samples`` samples answered after ``--latency`` seconds by a
server in its own process. Records are written (fsync'ed) as in a real run.
Reports images/s at each concurrency and the overhead per image beyond the simulated latency
(at concurrency 1: wall time per image minus the latency).

    python bench/eval_throughput.py --latency 0.2 --concurrency 1 16 64
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vlm_throughput import server_process

from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.config import load_settings
from geosleuth.eval.datasets import open_dataset
from geosleuth.eval.runner import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument(
        "--images", type=int, default=0, help="Images per run (default: 4 x concurrency, at least 16)."
    )
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="geosleuth-eval-bench-"))
    try:
        photo = work / "photo.jpg"
        Image.new("RGB", (640, 480), (90, 120, 160)).save(photo, quality=90)
        rows = []
        with server_process(args.latency) as url:
            for c in args.concurrency:
                n = args.images or max(16, 4 * c)
                table = work / f"set{n}.csv"
                table.write_text(
                    "id,image,lat,lon\n" + "".join(f"s{i:04d},{photo},48.85,2.35\n" for i in range(n))
                )
                settings = load_settings(
                    offline=True,
                    ocr={"engine": "none"},
                    vlm={"base_url": url, "rag_k": [0], "samples": args.samples, "max_concurrency": c},
                )
                locator = Locator(deps=build_deps(settings))
                locator.locate(str(photo))  # warm-up: gazetteer, model discovery, connections
                rates = []
                for rep in range(args.repeats):
                    out = work / f"run-{c}-{rep}"
                    t0 = time.perf_counter()
                    summary = run(open_dataset(str(table)), locator, out, concurrency=c)
                    elapsed = time.perf_counter() - t0
                    if summary.errors or summary.ran != n:
                        raise SystemExit(f"run failed: {summary}")
                    rates.append(n / elapsed)
                    shutil.rmtree(out)
                rate = statistics.median(rates)
                rows.append((c, n, rate, c / rate - args.latency))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"latency {args.latency} s, {args.samples} samples per request, median of {args.repeats} runs")
    print(f"{'concurrency':>11} {'images':>6} {'images/s':>9} {'overhead/image (s)':>19}")
    for c, n, rate, overhead in rows:
        print(f"{c:>11} {n:>6} {rate:>9.2f} {overhead:>19.3f}")
    print(
        "overhead/image = concurrency / throughput - latency: the time an image holds a slot beyond the server's"
    )


if __name__ == "__main__":
    main()
