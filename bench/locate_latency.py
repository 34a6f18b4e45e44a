"""Latency of `locate` per image: medians over repeated runs, warm (index built, engines loaded).

    .venv/bin/python bench/locate_latency.py [--repeats 3] [--ocr auto] [--shared ../shared/data/exif-photos]

Reports, for the bundled sign fixtures and (when present) the real reference photos, the median and
the 90th percentile seconds per image, and the share of the reference photos whose EXIF position
lies within 10 m of their index entry.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import time
from pathlib import Path

from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.config import load_settings
from geosleuth.geo import geodesic_km

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_set(locator: Locator, paths: list[Path], repeats: int) -> list[float]:
    per_image = []
    for path in paths:
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            locator.locate(path)
            runs.append(time.perf_counter() - t0)
        per_image.append(statistics.median(runs))
    return per_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--ocr", default="auto", help="OCR engine to time (auto, hybrid, rapidocr, tesseract, none)"
    )
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data" / "exif-photos")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    settings = load_settings(ocr={"engine": args.ocr})
    locator = Locator(deps=build_deps(settings))
    locator.deps.gazetteer.ensure_built()
    fixtures = ROOT / "tests" / "fixtures"
    signs = [*sorted(fixtures.glob("sign_*.jpg")), fixtures / "shop_es_phone.jpg"]
    locator.locate(signs[0])  # warm up: load OCR models, open the index

    results: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "ocr": locator.deps.ocr.name if locator.deps.ocr else "none",
        "repeats": args.repeats,
    }
    sign_times = time_set(locator, signs, args.repeats)
    results["signs"] = {
        "n": len(signs),
        "median_s": statistics.median(sign_times),
        "p90_s": percentile(sign_times, 0.9),
    }

    index = []
    for sub in ("exif-samples", "metadata-extractor-images"):
        f = args.shared / sub / "gps_index.csv"
        if f.exists():
            index += [
                (args.shared / sub / "images" / r["path"], float(r["lat"]), float(r["lon"]))
                for r in csv.DictReader(f.open())
            ]
    if index:
        photos = [p for p, _, _ in index]
        photo_times = time_set(locator, photos, args.repeats)
        results["photos"] = {
            "n": len(photos),
            "median_s": statistics.median(photo_times),
            "p90_s": percentile(photo_times, 0.9),
        }
        exif_only = Locator(
            deps=build_deps(settings.with_overrides(ocr={"engine": "none"}), gazetteer=locator.deps.gazetteer)
        )
        exif_times = time_set(exif_only, photos, args.repeats)
        within = 0
        for path, lat, lon in index:
            pred = exif_only.locate(path)
            if pred.best and float(geodesic_km(pred.best.point.lat, pred.best.point.lon, lat, lon)) <= 0.010:
                within += 1
        results["photos_exif_only"] = {
            "n": len(photos),
            "median_s": statistics.median(exif_times),
            "p90_s": percentile(exif_times, 0.9),
            "within_10_m": f"{within}/{len(index)}",
        }

    for key in ("signs", "photos", "photos_exif_only"):
        if key in results:
            r = results[key]
            assert isinstance(r, dict)
            extra = f"  within 10 m: {r['within_10_m']}" if "within_10_m" in r else ""
            print(
                f"{key:18s} n={r['n']:3d}  median {r['median_s'] * 1000:7.1f} ms  p90 {r['p90_s'] * 1000:7.1f} ms{extra}"
            )
    print(f"(ocr engine: {results['ocr']}, {results['repeats']} runs per image, {results['machine']})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
