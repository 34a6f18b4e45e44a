"""Harness throughput: images/s of ``geosleuth eval run`` at several concurrencies.

Two modes:

* ``--dataset SPEC`` (real photos, e.g. ``im2gps3k:../shared/data/im2gps3k-dev/images``):
  a ``--sample`` of the dataset (drawn with ``--seed``) goes through the evidence-only pipeline
  with the configured OCR (default: the installed engines), records written as in a real run.
  Reports images/s and the per-image seconds (median, p90) at each concurrency. On a 2-core
  machine concurrency mostly overlaps OCR's own threads and file reads; it cannot add cores.

      python bench/eval_throughput.py --dataset im2gps3k:../shared/data/im2gps3k-dev/images \
          --meta ../shared/data/geoestimation/meta/im2gps3k_places365.csv --sample 100 --concurrency 1 4

* default (no ``--dataset``): against the local OpenAI-compatible test server with simulated
  latency. Each image goes through the whole pipeline (load, EXIF, verify; OCR off so the VLM is
  the only wait) with one VLM request of ``--samples`` samples answered after ``--latency``
  seconds by a server in its own process. Reports images/s at each concurrency and the overhead
  per image beyond the simulated latency (at concurrency 1: wall time per image minus the latency).

      python bench/eval_throughput.py --latency 0.2 --concurrency 1 16 64
"""

from __future__ import annotations

import argparse
import os
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
from geosleuth.eval.runner import RECORDS, RecordStore, run


def real_photos(args: argparse.Namespace) -> None:
    """Evidence-only runs over a sample of a real dataset, one per concurrency (then repeats)."""
    ds = open_dataset(
        args.dataset, meta=Path(args.meta) if args.meta else None, sample=args.sample, seed=args.seed
    )
    settings = load_settings(offline=True, ocr={"engine": args.ocr} if args.ocr else None)
    locator = Locator(deps=build_deps(settings))
    locator.deps.gazetteer.ensure_built()
    first = next(iter(ds))
    locator.locate(first.load(), name=first.name)  # warm-up: OCR models, gazetteer, language data
    work = Path(tempfile.mkdtemp(prefix="geosleuth-eval-bench-"))
    rows = []
    try:
        for c in args.concurrency:
            rates, medians, p90s = [], [], []
            for rep in range(args.repeats):
                out = work / f"run-{c}-{rep}"
                t0 = time.perf_counter()
                summary = run(ds, locator, out, concurrency=c)
                elapsed = time.perf_counter() - t0
                if summary.errors or summary.ran != len(ds):
                    raise SystemExit(f"run failed: {summary}")
                seconds = sorted(r.seconds for r in RecordStore(out / RECORDS).records())
                rates.append(len(ds) / elapsed)
                medians.append(statistics.median(seconds))
                p90s.append(statistics.quantiles(seconds, n=10)[-1] if len(seconds) > 1 else seconds[0])
                shutil.rmtree(out)
            rows.append((c, statistics.median(rates), statistics.median(medians), statistics.median(p90s)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    engine = locator.model_ids().get("ocr", "no OCR")
    print(f"{ds.name}: {len(ds)} images (sample seed {args.seed}), evidence only, OCR: {engine}")
    print(f"median of {args.repeats} run(s) per concurrency; {os.cpu_count()} CPUs")
    print(f"{'concurrency':>11} {'images/s':>9} {'median s/image':>15} {'p90 s/image':>12}")
    for c, rate, med, p90 in rows:
        print(f"{c:>11} {rate:>9.2f} {med:>15.2f} {p90:>12.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument(
        "--images", type=int, default=0, help="Images per run (default: 4 x concurrency, at least 16)."
    )
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dataset", help="A dataset spec of real photos (evidence-only mode; see above).")
    ap.add_argument("--meta", help="The benchmark's metadata table (with --dataset).")
    ap.add_argument("--sample", type=int, default=100, help="Images drawn from --dataset.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ocr", help="OCR engine for --dataset (default: the configured one).")
    args = ap.parse_args()
    if args.dataset:
        real_photos(args)
        return

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
