"""What OCR's tiled second look (``ocr.tiles``) buys on real photos: text lines, place names,
answers and accuracy, against the time it costs, on a seeded sample of the Im2GPS3k dev photos.

    PYTHONPATH=src .venv/bin/python bench/ocr_tiles.py [--sample 80] [--seed 14] [--json out.json]

Each photo is located (evidence only, warm, one process) once per setting of ``ocr.tiles``
(off, auto, always). Prints per setting: text lines read (confidence >= 0.5), photos with any
line, place-name clues, answers, answers right within 750 km, forced accuracy at 750 km, and the
median and p90 of ``locate``'s wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ocr_latency import percentile

from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.config import load_settings
from geosleuth.geo import haversine_km

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "im2gps3k-dev"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=80)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--dev", type=Path, default=DEV)
    ap.add_argument("--modes", default="off,auto,always")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    labels = args.dev / "labels.csv"
    if not labels.is_file():
        print(f"no dev photos at {args.dev} (labels.csv): nothing to measure", file=sys.stderr)
        return 2
    with open(labels, newline="") as f:
        rows = [(args.dev / r["file"], float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)]
    rows = random.Random(args.seed).sample(rows, min(args.sample, len(rows)))
    cache = Path(tempfile.gettempdir()) / "geosleuth-bench-cache"
    base = load_settings(cache_dir=cache)
    results = {}
    for mode in args.modes.split(","):
        locator = Locator(deps=build_deps(base.with_overrides(ocr={"tiles": mode})))
        locator.locate(rows[0][0])  # warm: models and gazetteer loaded
        times, lines, with_text, places, answered, right, forced = [], 0, 0, 0, 0, 0, 0
        for path, lat, lon in rows:
            t0 = time.perf_counter()
            pred = locator.locate(path)
            times.append(time.perf_counter() - t0)
            n = sum(1 for line in pred.text_lines if line.confidence >= 0.5)
            lines += n
            with_text += n > 0
            places += sum(1 for e in pred.evidence if e.kind.value == "place-name")
            top = pred.candidates[0] if pred.candidates else None
            near = top is not None and bool(haversine_km(top.point.lat, top.point.lon, lat, lon) <= 750)
            forced += near
            if pred.status == "located":
                answered += 1
                right += near
        results[mode] = {
            "photos": len(rows),
            "lines": lines,
            "photos_with_text": with_text,
            "place_clues": places,
            "answered": answered,
            "answered_right_750km": right,
            "forced_750km": forced,
            "median_s": round(statistics.median(times), 3),
            "p90_s": round(percentile(times, 0.9), 3),
        }
        print(mode, json.dumps(results[mode]), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"sample": args.sample, "seed": args.seed, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
